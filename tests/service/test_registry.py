"""Hot swaps under traffic, corrupt versions, pinning: through a real server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from densitywatch.client import Client
from densitywatch.density.artifact import ArtifactStore
from densitywatch.density.model import log_prob_numpy
from densitywatch.errors import NotCalibratedError
from densitywatch.service.settings import ServiceSettings
from tests.service.service_support import (
    add_calibration,
    copy_store,
    hosts_data,
    hosts_schema,
    make_settings,
    metric,
    pair_data,
    pair_schema,
    running_server,
    scrape,
    write_version,
)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def test_hot_swap_under_traffic_fails_no_call(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    numbers, strings = hosts_data(8, seed=3)
    x = hosts_schema().encode(numbers, strings)
    expected = {"000002": log_prob_numpy(store.load("hosts", "000002").model, x)}
    settings = make_settings(root, poll_interval_s=0.1)
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        seen: list[tuple[str, np.ndarray]] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                try:
                    r = client.score("hosts", numbers, strings)
                    seen.append((r.model_version, r.log_prob))
                except BaseException as e:
                    errors.append(e)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        schema = hosts_schema()
        fit_n, fit_s = hosts_data(800, seed=21)
        cal_n, cal_s = hosts_data(400, seed=22)
        new = write_version(
            store, "hosts", schema, schema.encode(fit_n, fit_s), schema.encode(cal_n, cal_s), seed=5
        )
        expected[new.version] = log_prob_numpy(new.model, x)
        wait_for(lambda: any(v == new.version for v, _ in seen))
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    versions = [v for v, _ in seen]
    assert "000002" in versions and new.version == "000004"
    assert versions.index(new.version) > 0
    assert "000002" not in versions[versions.index(new.version) + 20 :]
    for version, log_p in seen:  # every point attributed to the version that scored it
        np.testing.assert_allclose(log_p, expected[version], rtol=1e-5, atol=1e-4)


def test_corrupt_version_never_replaces_serving(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    settings = make_settings(root, poll_interval_s=0.1)
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        bad = add_calibration(store, store.load("alpha", "000002"), pair_data(400, 9, 0.0))
        weights = bad.path / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])  # truncated
        port = server.metrics_port
        wait_for(
            lambda: (
                metric(scrape(port), "densitywatch_model_load_failures_total", stream="alpha") == 1
            )
        )
        time.sleep(0.5)  # several more polls: not retried
        samples = scrape(port)
        assert metric(samples, "densitywatch_model_load_failures_total", stream="alpha") == 1
        assert metric(samples, "densitywatch_model_info", stream="alpha", version="000002") == 1
        assert client.score("alpha", np.zeros((2, 2))).model_version == "000002"
        assert client.get_stream("alpha").model_version == "000002"
        assert ("alpha", bad.version) in server.registry.bad_versions()


def test_startup_falls_back_past_a_corrupt_newest(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    bad = add_calibration(store, store.load("beta", "000002"), pair_data(400, 9, 8.0))
    manifest = bad.path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"n_scores"', '"n_scores_edited"', 1))
    with running_server(make_settings(root)) as server, Client(f"127.0.0.1:{server.port}") as c:
        assert c.score("beta", np.zeros((1, 2))).model_version == "000002"
        samples = scrape(server.metrics_port)
        assert metric(samples, "densitywatch_model_load_failures_total", stream="beta") == 1


def test_pinned_versions(
    built_store: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    write_version(store, "alpha", pair_schema(), pair_data(600, 7, 0.0), pair_data(400, 8, 0.0))
    monkeypatch.setenv("DENSITYWATCH_PINNED", '{"alpha": "000002", "beta": "000001"}')
    monkeypatch.setenv("DENSITYWATCH_MODEL_STORE", str(root))
    env = ServiceSettings()
    assert env.pinned == {"alpha": "000002", "beta": "000001"}
    settings = make_settings(root, pinned=env.pinned)
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        assert client.score("alpha", np.zeros((1, 2))).model_version == "000002"
        assert client.score("hosts", *hosts_data(1, 1)).model_version == "000002"
        with pytest.raises(NotCalibratedError, match="000001"):
            client.score("beta", np.zeros((1, 2)))
