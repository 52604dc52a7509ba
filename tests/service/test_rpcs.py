"""Every RPC through a real server and the real client, checked against the library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.client import Client
from densitywatch.density.classify import posterior
from densitywatch.density.model import log_prob_numpy
from densitywatch.service.server import SERVICE_NAME, DensityWatchServer
from tests.service.service_support import OS_VOCAB, hosts_data, pair_data


def expected(artifact: Any, numbers: np.ndarray, strings: Any = None) -> tuple[np.ndarray, ...]:
    schema = artifact.manifest.feature_schema
    log_p = log_prob_numpy(artifact.model, schema.encode(numbers, strings))
    cal = artifact.manifest.calibration
    levels = [cal.level_of(v) or "normal" for v in log_p]
    return log_p, cal.p_values(log_p), np.asarray(levels)


def test_score_matches_the_library(client: Client, built_store: tuple[Path, dict]) -> None:
    hosts = built_store[1]["hosts"]
    numbers, strings = hosts_data(50, seed=7)
    numbers[0] = [0.5, 40.0, 10.0]  # memory far off the cpu relation: an outlier
    result = client.score("hosts", numbers, strings)
    log_p, p_value, levels = expected(hosts, numbers, strings)
    assert result.model_version == hosts.version == "000002"
    np.testing.assert_allclose(result.log_prob, log_p, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(result.p_value, p_value)
    assert result.level == levels.tolist()
    assert result.level[0] == "critical"
    assert result.terms is None


def test_explanation_names_the_improbable_feature(client: Client) -> None:
    numbers, strings = hosts_data(4, seed=8)
    numbers[2] = [0.5, 40.0, 10.0]
    result = client.score("hosts", numbers, strings, explain=True, top_k=2)
    assert result.feature_names == ["cpu", "mem", "conns", "os"]
    assert result.terms is not None and result.terms.shape == (4, 4)
    assert result.top_features is not None and result.top_terms is not None
    assert result.top_features[2][0] == "mem"
    assert all(len(t) == 2 for t in result.top_features)
    for row, names, values in zip(result.terms, result.top_features, result.top_terms, strict=True):
        idx = [result.feature_names.index(n) for n in names]
        np.testing.assert_allclose(row[idx], values)
        assert values[0] == pytest.approx(row.min())
    default = client.score("hosts", numbers, strings, explain=True)
    assert default.top_features is not None and all(len(t) == 3 for t in default.top_features)


def test_dict_records_score_like_arrays(client: Client) -> None:
    numbers, strings = hosts_data(5, seed=9)
    records = [
        {"cpu": n[0], "mem": n[1], "conns": int(n[2]), "os": s[0]}
        for n, s in zip(numbers.tolist(), strings, strict=True)
    ]
    a = client.score("hosts", numbers, strings)
    b = client.score("hosts", records)
    np.testing.assert_array_equal(a.log_prob, b.log_prob)


def test_score_stream_echoes_request_ids(client: Client) -> None:
    batches = [hosts_data(n, seed=n) for n in (3, 1, 7, 2)]
    results = list(client.score_stream("hosts", batches))
    assert [r.request_id for r in results] == ["0", "1", "2", "3"]
    for (numbers, strings), result in zip(batches, results, strict=True):
        single = client.score("hosts", numbers, strings)
        np.testing.assert_array_equal(result.log_prob, single.log_prob)
        assert result.model_version == single.model_version


def test_list_and_get_stream(client: Client, built_store: tuple[Path, dict]) -> None:
    streams = {s.name: s for s in client.list_streams()}
    assert set(streams) == {"alpha", "beta", "hosts", "raw"}
    assert streams["raw"].state == pb.STREAM_STATE_UNCALIBRATED
    assert "calibrate" in streams["raw"].state_detail
    info = client.get_stream("hosts")
    manifest = built_store[1]["hosts"].manifest
    assert info.state == pb.STREAM_STATE_SERVING
    assert info.model_version == "000002" and info.parent_version == "000001"
    assert [f.name for f in info.features] == ["cpu", "mem", "conns", "os"]
    assert [f.raw_type for f in info.features] == ["number", "number", "number", "string"]
    assert info.features[2].kind == "integer"
    assert list(info.features[3].vocabulary) == OS_VOCAB
    assert [(lv.name, lv.target_fpr, lv.threshold) for lv in info.levels] == [
        (lv.name, lv.target_fpr, lv.threshold) for lv in manifest.calibration.levels
    ]
    assert info.calibrated_at.ToDatetime().timestamp() == pytest.approx(
        manifest.calibration.created_at.timestamp(), abs=1e-3
    )
    assert info.n_calibration_scores == manifest.calibration.n_scores
    assert info.training.val_nll == pytest.approx(manifest.training.val_nll)
    assert info.training.n_train == manifest.training.n_train


def test_sample_is_reproducible_by_seed(client: Client) -> None:
    a = client.sample("hosts", 20, seed=42)
    b = client.sample("hosts", 20, seed=42)
    c = client.sample("hosts", 20, seed=43)
    assert a.numbers.shape == (20, 3) and len(a.strings) == 20
    np.testing.assert_array_equal(a.numbers, b.numbers)
    assert a.strings == b.strings and a.seed == 42
    assert not np.array_equal(a.numbers, c.numbers)
    assert all(row[0] in OS_VOCAB for row in a.strings)
    assert np.all(a.numbers[:, 2] == np.floor(a.numbers[:, 2]))  # integer feature
    unseeded = client.sample("hosts", 5)
    again = client.sample("hosts", 5, seed=unseeded.seed)
    np.testing.assert_array_equal(unseeded.numbers, again.numbers)
    # samples score like typical data, not like outliers
    scored = client.score("hosts", a.records())
    assert np.median(scored.p_value) > 0.1


def test_classify_matches_bayes_rule(client: Client, built_store: tuple[Path, dict]) -> None:
    x = np.concatenate([pair_data(20, 11, 0.0), pair_data(20, 12, 8.0)])
    result = client.classify(["alpha", "beta"], x)
    assert result.posterior.shape == (40, 2)
    np.testing.assert_allclose(result.posterior.sum(axis=1), 1.0)
    assert result.best[:20].count("alpha") >= 18 and result.best[20:].count("beta") >= 18
    arts = built_store[1]
    log_p = np.stack([log_prob_numpy(arts[s].model, x) for s in ("alpha", "beta")], axis=1)
    np.testing.assert_allclose(result.log_prob, log_p, rtol=1e-5, atol=1e-4)
    priors = [0.999, 0.001]
    tilted = client.classify(["alpha", "beta"], x, priors=priors)
    np.testing.assert_allclose(
        tilted.posterior, posterior(tilted.log_prob, np.asarray(priors)), atol=1e-9
    )
    assert tilted.posterior[:, 0].sum() > result.posterior[:, 0].sum()


def test_health_and_reflection(server: DensityWatchServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME, f"{SERVICE_NAME}/hosts"):
            status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
            assert status == health_pb2.HealthCheckResponse.SERVING, name
        raw = health.Check(health_pb2.HealthCheckRequest(service=f"{SERVICE_NAME}/raw")).status
        assert raw == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(iter(stub.ServerReflectionInfo(iter([request]))))
        names = {s.name for s in response.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
