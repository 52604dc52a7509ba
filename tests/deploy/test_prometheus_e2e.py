"""End to end with a real Prometheus: it scrapes a real densitywatch server and evaluates the
shipped rules (deploy/prometheus/rules.yml with every duration shortened to seconds).

Two calibrated streams are served: `steady` receives points from its training distribution,
`drifting` only points far outside it. Prometheus' view of the counters must equal what the
client saw, and DensityWatchOutlierRateHigh must fire for `drifting` and not for `steady`.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
import yaml

from densitywatch.client import Client
from densitywatch.density.artifact import ArtifactStore
from densitywatch.service.server import DensityWatchServer
from tests.deploy.deploy_helpers import PROMETHEUS, require_tool
from tests.service.service_support import (
    make_settings,
    pair_data,
    pair_schema,
    running_server,
    write_version,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.timeout(180)

RULES = PROMETHEUS / "rules.yml"
ALERT = "DensityWatchOutlierRateHigh"
WINDOW = "30s"  # replaces every range and offset duration of the rules (10m, 15m, 5m)
FOR = "2s"  # replaces every `for:`
N_POINTS = 1000  # per stream: critical (fpr 0.01) expects >= 5 outliers only from 500 points
WAIT_S = 45.0
RANGE = re.compile(r"\[\s*\d+[smhdwy]\s*\]")
OFFSET = re.compile(r"\boffset\s+\d+[smhdwy]\b")

T = TypeVar("T")


# -- rules with short durations ----------------------------------------------------------------
def shorten(expr: str, window: str = WINDOW) -> str:
    return OFFSET.sub(f"offset {window}", RANGE.sub(f"[{window}]", expr))


def short_rules(doc: dict[str, Any]) -> dict[str, Any]:
    """The rules document with every range, offset and `for` duration shortened."""
    out = copy.deepcopy(doc)
    for group in out["groups"]:
        for rule in group["rules"]:
            rule["expr"] = shorten(rule["expr"])
            if "for" in rule:
                rule["for"] = FOR
    return out


def _skeleton(doc: dict[str, Any]) -> dict[str, Any]:
    """The rules with every duration blanked, to compare two documents' logic."""
    out = copy.deepcopy(doc)
    for group in out["groups"]:
        for rule in group["rules"]:
            rule["expr"] = shorten(rule["expr"], "D")
            if "for" in rule:
                rule["for"] = "D"
    return out


def test_short_rules_change_only_durations() -> None:
    original = yaml.safe_load(RULES.read_text())
    short = short_rules(original)
    assert _skeleton(short) == _skeleton(original)
    alert = next(r for g in short["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    assert alert["for"] == FOR
    recording = [r["expr"] for g in short["groups"] for r in g["rules"] if "record" in r]
    assert recording and all(f"[{WINDOW}]" in e and "[10m]" not in e for e in recording)


# -- processes --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """Poll `check` until it returns something other than None/False."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


class Prometheus:
    """A Prometheus server on a loopback port, with its HTTP API."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url, self.process, self.log = url, process, log

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant vector -> {sorted labels without __name__/instance/job: value}."""
        out = {}
        for item in self.api("query", query=promql)["result"]:
            labels = {
                k: v for k, v in item["metric"].items() if k not in ("__name__", "instance", "job")
            }
            out[tuple(sorted(labels.items()))] = float(item["value"][1])
        return out

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False


def write_prometheus_config(folder: Path, metrics_port: int) -> Path:
    (folder / "rules.yml").write_text(
        yaml.safe_dump(short_rules(yaml.safe_load(RULES.read_text())), sort_keys=False)
    )
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": "densitywatch",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DensityWatchServer]:
    """Two tiny calibrated streams (warning fpr 0.05, critical 0.01), served in-process."""
    root = tmp_path_factory.mktemp("e2e") / "store"
    store = ArtifactStore(root)
    for seed, name in ((10, "steady"), (20, "drifting")):
        write_version(
            store, name, pair_schema(), pair_data(600, seed, 0.0), pair_data(400, seed + 1, 0.0)
        )
    with running_server(make_settings(root)) as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(
    service: DensityWatchServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    binary = require_tool("prometheus")  # skips only outside CI, where it cannot be installed
    folder = tmp_path_factory.mktemp("prometheus")
    config = write_prometheus_config(folder, service.metrics_port)
    url = f"http://127.0.0.1:{free_port()}"
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            cwd=folder,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        prom = Prometheus(url, process, log)
        wait_for("prometheus ready", prom.ready)
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the test ---------------------------------------------------------------------------------
def send(client: Client, stream: str, x: np.ndarray) -> dict[str, int]:
    """Score x; return the outliers per level as the client sees them (log p < threshold)."""
    thresholds = {lv.name: lv.threshold for lv in client.get_stream(stream).levels}
    counts = dict.fromkeys(thresholds, 0)
    for chunk in np.array_split(x, 4):
        result = client.score(stream, chunk)
        for level, threshold in thresholds.items():
            counts[level] += int((result.log_prob < threshold).sum())
    return counts


def firing(prom: Prometheus, stream: str) -> set[str] | None:
    levels = {
        a["labels"]["level"]
        for a in prom.alerts()
        if a["labels"].get("alertname") == ALERT
        and a["labels"].get("stream") == stream
        and a["state"] == "firing"
    }
    return levels if levels == {"warning", "critical"} else None


def test_prometheus_sees_the_counts_and_fires_the_outlier_alert(
    service: DensityWatchServer, prometheus: Prometheus
) -> None:
    points = "densitywatch_points_scored_total"
    # Both counters must be scraped at 0 first, so rate() sees the increase.
    wait_for(
        "a first scrape of both streams",
        lambda: (
            prometheus.query(points)
            == {(("stream", "drifting"),): 0.0, (("stream", "steady"),): 0.0}
        ),
    )
    with Client(f"127.0.0.1:{service.port}", timeout=30) as client:
        seen = {
            "steady": send(client, "steady", pair_data(N_POINTS, 31, 0.0)),
            "drifting": send(client, "drifting", pair_data(N_POINTS, 32, 12.0)),
        }
    assert seen["drifting"] == {"warning": N_POINTS, "critical": N_POINTS}
    assert seen["steady"]["warning"] < 0.15 * N_POINTS  # below the alert's 3x of 0.05

    expected_points = {(("stream", s),): float(N_POINTS) for s in seen}
    wait_for("the scored points in Prometheus", lambda: prometheus.query(points) == expected_points)
    outliers = prometheus.query("densitywatch_outliers_total")
    assert outliers == {
        (("level", level), ("stream", stream)): float(count)
        for stream, counts in seen.items()
        for level, count in counts.items()
    }

    assert wait_for(f"{ALERT} firing for drifting", lambda: firing(prometheus, "drifting")) == {
        "warning",
        "critical",
    }
    # steady went through the same rule evaluations: its ratio is there, and below 3x.
    ratio = prometheus.query('stream_level:densitywatch_outlier_ratio:rate10m{stream="steady"}')
    assert set(ratio) == {
        (("level", "critical"), ("stream", "steady")),
        (("level", "warning"), ("stream", "steady")),
    }
    assert all(v < 0.15 for v in ratio.values()), ratio
    steady_alerts = [a for a in prometheus.alerts() if a["labels"].get("stream") == "steady"]
    assert steady_alerts == []
