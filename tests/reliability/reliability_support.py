"""Helpers for the reliability tests: planting versions in a live store, waiting, tallies.

(A uniquely named module rather than conftest.py, so `import` cannot pick up another
directory's conftest.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from densitywatch.density.artifact import MANIFEST, WEIGHTS, ArtifactStore
from tests.service.service_support import metric, scrape

MAX_POINTS = 500  # limits of the shared `server` fixture
MAX_MESSAGE_BYTES = 64 * 1024


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"condition not reached: {what}")
        time.sleep(0.05)


def next_version(store: ArtifactStore, stream: str) -> str:
    versions = store.versions(stream)
    return f"{int(versions[-1]) + 1:06d}" if versions else "000001"


def plant_version(
    store: ArtifactStore, stream: str, scratch: Path, spoil: Callable[[Path], None]
) -> str:
    """Copy the stream's newest version to the next version number, spoil the copy, then
    rename it into the live store in one step (so the poller never sees it half-spoiled)."""
    latest = store.latest(stream)
    version = next_version(store, stream)
    staged = scratch / f"{stream}-{version}"
    shutil.copytree(store.path(stream, latest), staged)
    body = json.loads((staged / MANIFEST).read_text())
    body.update(version=version, parent_version=latest)
    write_signed_manifest(staged, body)
    spoil(staged)
    os.rename(staged, store.path(stream, version))
    return version


def write_signed_manifest(path: Path, body: dict[str, Any]) -> None:
    """Make the manifest vouch for whatever weights file is there now (as an attacker with
    write access to the store could), so only the loader's own checks stand in the way."""
    body["weights_sha256"] = hashlib.sha256((path / WEIGHTS).read_bytes()).hexdigest()
    # The checksum as the loader computes it, of the JSON as stored: no validation, so a
    # manifest with any content can be signed.
    unsigned = {key: value for key, value in body.items() if key != "manifest_sha256"}
    body["manifest_sha256"] = hashlib.sha256(
        json.dumps(unsigned, sort_keys=True).encode()
    ).hexdigest()
    (path / MANIFEST).write_text(json.dumps(body))


def load_failures(metrics_port: int, stream: str) -> float:
    return metric(scrape(metrics_port), "densitywatch_model_load_failures_total", stream=stream)


def code_counts(samples: dict[Any, float], method: str) -> dict[str, float]:
    """{status code name: calls} of one method, from densitywatch_request_duration_seconds."""
    out: dict[str, float] = {}
    for (name, labels), value in samples.items():
        d = dict(labels)
        if name == "densitywatch_request_duration_seconds_count" and d.get("method") == method:
            out[d["code"]] = value
    return out


def invalid_total(samples: dict[Any, float]) -> float:
    return sum(v for (name, _), v in samples.items() if name == "densitywatch_invalid_points_total")
