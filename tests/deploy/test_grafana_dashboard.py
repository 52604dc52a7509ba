"""Grafana dashboard and provisioning: PromQL against the metrics the service exports."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    DOCKER,
    GRAFANA,
    exported_metric_names,
    metric_names,
    require_tool,
)

DASHBOARD = GRAFANA / "dashboards" / "densitywatch.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def exprs(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and query variable."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]
            yield f"variable {var['name']}", query["query"] if isinstance(query, dict) else query


# -- the metric-name extractor itself ----------------------------------------------------------
@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            'sum by (le) (rate(a_bucket{stream=~"$stream", le!="1"}[$__rate_interval]))',
            {"a_bucket"},
        ),
        ("histogram_quantile(0.99, sum by (le, method) (rate(x_bucket[5m]))) > 0.25", {"x_bucket"}),
        ("a / on (stream) group_left sum by (stream) (b) and c offset 15m", {"a", "b", "c"}),
        ("time() - min by (stream) (ts_seconds) > 3 * 86400 unless up == 0", {"ts_seconds", "up"}),
        ("label_values(points_total, stream)", {"points_total"}),
        ("sum(rate(x[1m])) by (instance) / 1e3", {"x"}),
        ("max(y) by (a,b) or vector(0)", {"y"}),
    ],
)
def test_metric_names_extracts_selectors(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_exported_names_come_from_the_service_registry() -> None:
    """The exported set is the real registry's: each series the registry writes is in it."""
    import numpy as np
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from densitywatch.density.calibration import calibrate
    from densitywatch.service.metrics import ServiceMetrics

    metrics = ServiceMetrics(max_streams=5)
    calibration = calibrate(np.random.default_rng(0).normal(size=2000))
    stream = metrics.bind("hosts", "000001", calibration)
    stream.record_batch(np.array([-1.0, -9.0]), [1] * len(calibration.levels))
    metrics.observe_request("Score", "OK", 0.01)
    metrics.load_failed("hosts")
    text = generate_latest(metrics.registry).decode()
    written = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert written, "the registry wrote no series"
    assert written <= exported_metric_names()
    assert "densitywatch_log_prob_bucket" in written


# -- the dashboard -----------------------------------------------------------------------------
def test_every_dashboard_query_uses_exported_metrics() -> None:
    exported = exported_metric_names()
    found = list(exprs(dashboard()))
    assert len(found) >= 15
    for where, expr in found:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= exported, f"{where}: {sorted(names - exported)} not exported by the service"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each query (Grafana variables replaced by plausible values)."""
    rules = []
    for i, (_, expr) in enumerate(exprs(dashboard())):
        if expr.startswith("label_values("):
            continue
        concrete = expr.replace("$__rate_interval", "1m").replace("$stream", "hosts")
        assert "$" not in concrete, concrete
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _panels_using(board: dict[str, Any], metric: str, kind: str | None = None) -> list[str]:
    return [
        p["title"]
        for p in panels(board)
        if (kind is None or p["type"] == kind)
        and any(metric in metric_names(t["expr"]) for t in p.get("targets", []))
    ]


def test_dashboard_shows_what_operators_need() -> None:
    board = dashboard()
    # outlier rate per stream next to its expected (calibrated) rate, in one panel
    outlier = set(_panels_using(board, "densitywatch_outliers_total", "timeseries"))
    expected = set(_panels_using(board, "densitywatch_expected_outlier_rate", "timeseries"))
    assert outlier & expected
    assert _panels_using(board, "densitywatch_log_prob_bucket", "heatmap")
    assert _panels_using(board, "densitywatch_threshold")
    assert _panels_using(board, "densitywatch_points_scored_total", "timeseries")
    latency = [
        p
        for p in panels(board)
        if any(
            "histogram_quantile" in t["expr"]
            and "densitywatch_request_duration_seconds_bucket" in t["expr"]
            for t in p.get("targets", [])
        )
    ]
    assert latency and len(latency[0]["targets"]) >= 3  # p50, p90, p99
    assert _panels_using(board, "densitywatch_model_info", "table")
    assert _panels_using(board, "densitywatch_calibration_timestamp_seconds")


def test_per_stream_panels_repeat_over_the_stream_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["stream"]["includeAll"] and variables["stream"]["multi"]
    rows = [p for p in board["panels"] if p["type"] == "row" and p.get("repeat") == "stream"]
    assert len(rows) == 1
    # the panels under the repeated row (up to the next row) select exactly one stream
    start = board["panels"].index(rows[0]) + 1
    following = board["panels"][start:]
    end = next((i for i, p in enumerate(following) if p["type"] == "row"), len(following))
    for panel in following[:end]:
        for target in panel["targets"]:
            assert 'stream="$stream"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_layout_is_valid() -> None:
    board = dashboard()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids))
    assert board["uid"] == "densitywatch"
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), panel["title"]


def test_provisioning_matches_compose_mounts() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/densitywatch.yaml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = (DOCKER / source).resolve()
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    assert (
        mounts["/etc/grafana/provisioning/datasources"]
        == (GRAFANA / "provisioning/datasources").resolve()
    )
    assert (
        mounts["/etc/grafana/provisioning/dashboards"]
        == (GRAFANA / "provisioning/dashboards").resolve()
    )
    assert "prometheus" in compose["services"]
