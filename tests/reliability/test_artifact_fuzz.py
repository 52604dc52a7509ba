"""A fuzzer for the artifact loader: mutations of a valid artifact (manifest fields, re-signed;
weights' tensors, shapes and dtypes; truncated or altered bytes, re-signed) either load into
a model that scores finite numbers through the serving path, or are refused with the
artifact error; never another exception, a hang, or a large allocation."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from densitywatch.density.artifact import MANIFEST, WEIGHTS, load_artifact
from densitywatch.errors import ArtifactError
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.scorer import StreamModel
from tests.reliability.reliability_support import write_signed_manifest

SECONDS_PER_LOAD = 3.0
MAX_GROWTH_MB = 300.0  # the model here holds a few KB; building 4096-wide layers takes GBs


def _leaves(body: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(body, dict):
        for key, value in body.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(body, list) and body:
        for i in (0, len(body) - 1):
            yield from _leaves(body[i], (*path, i))
    else:
        yield path


def _set(body: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        body = body[key]
    body[path[-1]] = value


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 4095, 4096, 4097, 10**6, 2**31, 2**53 + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "normal", "000001", "../beta", "²", "continuous", "categorical"]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=4),
    st.just([]),
)


@st.composite
def manifest_edits(draw: st.DrawFn, body: dict[str, Any]) -> list[tuple[tuple[Any, ...], Any]]:
    paths = sorted(
        (p for p in _leaves(body) if p and p[-1] not in ("weights_sha256", "manifest_sha256")),
        key=repr,
    )
    chosen = draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True))
    return [(path, draw(VALUES)) for path in chosen]


TENSOR_EDITS = ["dtype16", "dtype64", "int", "drop_row", "add_row", "nan", "inf", "huge",
                "drop", "extra", "transpose", "orderings"]  # fmt: skip


def _edit_tensor(state: dict[str, torch.Tensor], name: str, how: str, rng: Any) -> None:
    t = state[name]
    if how == "dtype16":
        state[name] = t.to(torch.float16)
    elif how == "dtype64":
        state[name] = t.to(torch.float64)
    elif how == "int":
        state[name] = t.to(torch.int32)
    elif how == "drop_row" and t.dim() and t.shape[0] > 1:
        state[name] = t[:-1].contiguous()
    elif how == "add_row" and t.dim():
        state[name] = torch.cat([t, t[:1]])
    elif how in ("nan", "inf", "huge") and t.is_floating_point() and t.numel():
        value = {"nan": float("nan"), "inf": float("inf"), "huge": 1e30}[how]
        flat = t.clone().reshape(-1)
        flat[int(rng.integers(len(flat)))] = value
        state[name] = flat.reshape(t.shape)
    elif how == "drop":
        del state[name]
    elif how == "extra":
        state["unexpected.tensor"] = torch.zeros(3)
    elif how == "transpose" and t.dim() >= 2:
        state[name] = t.transpose(-1, -2).contiguous()
    elif how == "orderings":
        o = state["orderings"]
        state["orderings"] = torch.from_numpy(rng.integers(-2, o.shape[1] + 2, o.shape))


def _check(path: Path) -> None:
    """Load as the registry does, then score through the serving path; an ArtifactError
    anywhere is a refusal (the test's other outcome)."""
    artifact = load_artifact(path)
    calibration = artifact.manifest.calibration
    assert calibration is not None  # the manifest validated: the fuzzed one had one
    metrics = ServiceMetrics(max_streams=2).bind("alpha", artifact.version, calibration)
    model = StreamModel(artifact, metrics, trace=False)
    x = model.model.sample(32, torch.Generator().manual_seed(1)).double().numpy()
    scores = model.score(x)
    assert np.isfinite(scores.log_p).all() and np.isfinite(scores.p_value).all()
    assert scores.terms is not None and np.isfinite(scores.terms).all()
    model.assess(np.array([-1e300, -1e9, 0.0, 1e9]))  # extremes: decided, never raising


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _outcome(path: Path) -> str:
    baseline = _peak_rss_mb() if _reset_peak() else None
    start = time.perf_counter()
    try:
        _check(path)
        outcome = "loaded"
    except ArtifactError:
        outcome = "refused"
    assert time.perf_counter() - start < SECONDS_PER_LOAD
    if baseline is not None:
        assert _peak_rss_mb() - baseline < MAX_GROWTH_MB
    event(outcome)  # --hypothesis-show-statistics: how many of each
    return outcome


@pytest.fixture(scope="module")
def valid(built_store: tuple[Path, dict[str, Any]]) -> Path:
    return built_store[0] / "alpha" / "000002"


def _fresh(valid: Path, scratch: Path) -> Path:
    path = scratch / "alpha" / "000002"
    shutil.rmtree(scratch / "alpha", ignore_errors=True)
    shutil.copytree(valid, path)
    return path


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.data())
def test_fuzzed_manifests_load_or_are_refused(
    valid: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = _fresh(valid, tmp_path_factory.mktemp("fuzz"))
    body = json.loads((path / MANIFEST).read_text())
    for field, value in data.draw(manifest_edits(body)):
        _set(body, field, value)
    write_signed_manifest(path, body)
    _outcome(path)


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from(TENSOR_EDITS)), min_size=1, max_size=3
    ),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
@example(edits=[(0, "dtype16"), (0, "nan")], seed=0)  # an empty tensor has no element to poison
def test_fuzzed_weights_load_or_are_refused(
    valid: Path, tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, str]], seed: int
) -> None:
    path = _fresh(valid, tmp_path_factory.mktemp("fuzz"))
    state = load_file(str(path / WEIGHTS))
    rng = np.random.default_rng(seed)
    for index, how in edits:
        names = sorted(state)
        if names:
            _edit_tensor(state, names[index % len(names)], how, rng)
    save_file(state, str(path / WEIGHTS))
    write_signed_manifest(path, json.loads((path / MANIFEST).read_text()))
    _outcome(path)


@FUZZ
@given(
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
)
def test_fuzzed_weight_bytes_load_or_are_refused(
    valid: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cut: float,
    flips: list[tuple[int, int]],
) -> None:
    path = _fresh(valid, tmp_path_factory.mktemp("fuzz"))
    data = bytearray((path / WEIGHTS).read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for offset, value in flips:  # mostly the header: the JSON of names, dtypes and shapes
        data[offset % header] = value
    data = data[: max(1, int(len(data) * cut))] if cut < 1 else data
    (path / WEIGHTS).write_bytes(bytes(data))
    write_signed_manifest(path, json.loads((path / MANIFEST).read_text()))
    assert (
        hashlib.sha256(bytes(data)).hexdigest()
        == json.loads((path / MANIFEST).read_text())["weights_sha256"]
    )
    _outcome(path)
