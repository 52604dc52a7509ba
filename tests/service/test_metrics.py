"""/metrics, scraped over HTTP, equals what the client saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from densitywatch.client import Client
from densitywatch.errors import InvalidArgumentError
from tests.service.service_support import (
    hosts_data,
    make_settings,
    metric,
    pair_data,
    running_server,
    scrape,
)


def test_metrics_equal_what_the_client_saw(built_store: tuple[Path, dict]) -> None:
    settings = make_settings(built_store[0])
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        levels: list[str] = []
        log_ps: list[float] = []
        calls = 0
        for seed in range(6):
            numbers, strings = hosts_data(40, seed=100 + seed)
            numbers[: seed + 1, 1] += 3.0  # some outliers
            r = client.score("hosts", numbers, strings)
            levels += r.level
            log_ps += r.log_prob.tolist()
            calls += 1
        streamed = list(client.score_stream("hosts", [hosts_data(7, seed=9)] * 3))
        for r in streamed:
            levels += r.level
            log_ps += r.log_prob.tolist()
        with pytest.raises(InvalidArgumentError):
            client.score("hosts", np.full((2, 3), np.nan), [["linux"], ["mac"]])
        client.score("beta", pair_data(5, 1, 8.0))
        info = client.get_stream("hosts")
        samples = scrape(server.metrics_port)

    def m(name: str, **labels: str) -> float:
        return metric(samples, name, **labels)

    n = len(levels)
    assert m("densitywatch_points_scored_total", stream="hosts") == n
    critical = levels.count("critical")
    warning = levels.count("warning") + critical  # counted at every level crossed
    assert critical > 0 and warning > critical
    assert m("densitywatch_outliers_total", stream="hosts", level="critical") == critical
    assert m("densitywatch_outliers_total", stream="hosts", level="warning") == warning
    for lv in info.levels:
        assert m("densitywatch_threshold", stream="hosts", level=lv.name) == lv.threshold
        assert m("densitywatch_expected_outlier_rate", stream="hosts", level=lv.name) == (
            lv.target_fpr
        )
    assert m("densitywatch_model_info", stream="hosts", version="000002") == 1
    assert m("densitywatch_calibration_timestamp_seconds", stream="hosts") == pytest.approx(
        info.calibrated_at.ToDatetime().timestamp(), abs=1e-3
    )
    assert m("densitywatch_log_prob_count", stream="hosts") == n
    assert m("densitywatch_log_prob_sum", stream="hosts") == pytest.approx(sum(log_ps), rel=1e-6)
    lowest = min(lv.threshold for lv in info.levels)
    bucket = next(
        v
        for (name, labels), v in sorted(samples.items(), key=lambda kv: str(kv[0]))
        if name == "densitywatch_log_prob_bucket"
        and dict(labels).get("stream") == "hosts"
        and dict(labels)["le"] != "+Inf"
        and float(dict(labels)["le"]) == pytest.approx(lowest)
    )
    assert bucket == sum(1 for v in log_ps if v <= lowest)
    assert m("densitywatch_invalid_points_total", stream="hosts", reason="non_finite") == 1
    assert m("densitywatch_request_duration_seconds_count", method="Score", code="OK") == calls + 1
    assert (
        m("densitywatch_request_duration_seconds_count", method="Score", code="INVALID_ARGUMENT")
        == 1
    )
    assert m("densitywatch_request_duration_seconds_count", method="ScoreStream", code="OK") == 1
    assert m("densitywatch_batch_size_sum") == n + 5
    assert m("densitywatch_points_scored_total", stream="beta") == 5
    assert m("densitywatch_queue_depth") == 0


def test_streams_beyond_the_cap_are_labelled_other(built_store: tuple[Path, dict]) -> None:
    settings = make_settings(built_store[0], metrics_max_streams=1)
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        client.score("alpha", pair_data(3, 1, 0.0))
        client.score("beta", pair_data(4, 1, 8.0))
        client.score("hosts", *hosts_data(5, 1))
        samples = scrape(server.metrics_port)
    assert metric(samples, "densitywatch_points_scored_total", stream="alpha") == 3
    assert metric(samples, "densitywatch_points_scored_total", stream="other") == 9
    streams = {dict(k[1]).get("stream") for k in samples if "stream" in dict(k[1])}
    assert streams <= {"alpha", "other"}
