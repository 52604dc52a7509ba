"""Injected faults during traffic: spoiled versions appearing, the store vanishing, a swap
during a streaming call, SIGTERM under load, /metrics scraped during reloads. Every score is
checked against the model version its response names."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from densitywatch.client import Client
from densitywatch.density.artifact import WEIGHTS, ArtifactStore
from densitywatch.density.model import log_prob_numpy
from densitywatch.errors import DensityWatchError
from tests.reliability.reliability_support import load_failures, plant_version, wait_for
from tests.service.service_support import (
    add_calibration,
    copy_store,
    free_port,
    make_settings,
    metric,
    pair_data,
    running_server,
    scrape,
)

X = pair_data(6, seed=3, shift=0.0)


class Traffic:
    """Threads scoring X on `alpha`, recording (version, log p) and any error."""

    def __init__(self, client: Client, threads: int = 3) -> None:
        self.client = client
        self.seen: list[tuple[str, np.ndarray]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = self.client.score("alpha", X)
                self.seen.append((r.model_version, r.log_prob))
            except BaseException as e:
                self.errors.append(e)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def expected_log_p(store: ArtifactStore, versions: set[str]) -> dict[str, np.ndarray]:
    return {v: log_prob_numpy(store.load("alpha", v).model, X) for v in versions}


def assert_attributed(seen: list[tuple[str, np.ndarray]], store: ArtifactStore) -> None:
    """Every response's scores are those of the version it names."""
    expected = expected_log_p(store, {v for v, _ in seen})
    for version, log_p in seen:
        np.testing.assert_allclose(log_p, expected[version], rtol=1e-5, atol=1e-4)


def truncate_weights(path: Path) -> None:
    weights = path / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])


def edit_weights(path: Path) -> None:  # flip a byte: the manifest's checksum no longer matches
    weights = path / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def test_spoiled_versions_appearing_during_traffic_are_counted_and_never_served(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with (
        running_server(make_settings(root, poll_interval_s=0.05)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
        Traffic(client) as traffic,
    ):
        spoilers: list[Callable[[Path], None]] = [truncate_weights, edit_weights]
        for i, spoil in enumerate(spoilers, start=1):
            bad = plant_version(store, "alpha", scratch, spoil)

            def failed(n: int = i) -> bool:
                return load_failures(server.metrics_port, "alpha") == n

            wait_for(failed, what=bad)
            assert ("alpha", bad) in server.registry.bad_versions()
        time.sleep(0.3)  # more polls: never retried
        assert load_failures(server.metrics_port, "alpha") == 2
    assert traffic.errors == []
    assert {v for v, _ in traffic.seen} == {"000002"} and len(traffic.seen) > 10
    assert_attributed(traffic.seen, store)


def test_store_folder_vanishing_and_coming_back(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    away = tmp_path / "away"
    with (
        running_server(make_settings(root, poll_interval_s=0.05)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
        Traffic(client) as traffic,
    ):
        root.rename(away)
        time.sleep(0.5)  # ten polls of an absent store
        assert [s.name for s in client.list_streams()] == ["alpha", "beta", "hosts", "raw"]
        store = ArtifactStore(away)
        new = add_calibration(store, store.load("alpha", "000002"), pair_data(400, 9, 0.0))
        away.rename(root)
        wait_for(lambda: any(v == new.version for v, _ in traffic.seen), what="new version")
        time.sleep(0.2)
        assert load_failures(server.metrics_port, "alpha") == 0
    assert traffic.errors == []
    assert {v for v, _ in traffic.seen} == {"000002", new.version}
    assert_attributed(traffic.seen, ArtifactStore(root))


def test_a_store_absent_at_start_is_picked_up_when_it_appears(
    built_store: tuple[Path, dict], tmp_path: Path
) -> None:
    root = tmp_path / "store"
    with (
        running_server(make_settings(root, poll_interval_s=0.05)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        assert client.list_streams() == []
        copy_store(built_store[0], tmp_path / "staged")
        (tmp_path / "staged").rename(root)
        wait_for(lambda: len(client.list_streams()) == 4, what="streams loaded")
        assert client.score("alpha", X).model_version == "000002"


def test_model_swap_during_a_streaming_call(built_store: tuple[Path, dict], tmp_path: Path) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    swapped = threading.Event()
    with (
        running_server(make_settings(root, poll_interval_s=0.05)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):

        def batches() -> Iterator[np.ndarray]:
            deadline = time.monotonic() + 20
            sent_after_swap = 0
            while sent_after_swap < 20 and time.monotonic() < deadline:
                yield X
                sent_after_swap += swapped.is_set()
                time.sleep(0.01)

        seen: list[tuple[str, np.ndarray]] = []
        ids: list[str] = []
        for result in client.score_stream("alpha", batches()):
            seen.append((result.model_version, result.log_prob))
            ids.append(result.request_id)
            if len(seen) == 10:
                new = add_calibration(store, store.load("alpha", "000002"), pair_data(400, 9, 0.0))
            if len(seen) > 10 and result.model_version == new.version:
                swapped.set()
    versions = [v for v, _ in seen]
    assert ids == [str(i) for i in range(len(seen))]
    first_new = versions.index(new.version)
    assert first_new >= 10 and set(versions[first_new:]) == {new.version}
    assert set(versions[:first_new]) == {"000002"}
    assert_attributed(seen, store)


def test_metrics_scraped_during_reloads(built_store: tuple[Path, dict], tmp_path: Path) -> None:
    root = copy_store(built_store[0], tmp_path / "store")
    store = ArtifactStore(root)
    scrapes: list[dict] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with (
        running_server(make_settings(root, poll_interval_s=0.02)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):

        def scraper() -> None:
            while not stop.is_set():
                try:
                    scrapes.append(scrape(server.metrics_port))
                except BaseException as e:
                    failures.append(e)

        thread = threading.Thread(target=scraper)
        thread.start()
        versions = []
        with Traffic(client, threads=2) as traffic:
            for seed in range(3):
                new = add_calibration(store, store.load("alpha"), pair_data(400, 20 + seed, 0.0))
                versions.append(new.version)

                def serves(version: str = new.version) -> bool:
                    return client.get_stream("alpha").model_version == version

                wait_for(serves)
        stop.set()
        thread.join()
        final = scrape(server.metrics_port)
    assert failures == [] and traffic.errors == [] and len(scrapes) > 5
    for samples in scrapes:
        serving = [
            labels
            for (name, labels), value in samples.items()
            if name == "densitywatch_model_info" and ("stream", "alpha") in labels and value == 1
        ]
        assert len(serving) <= 1
    for version in ("000002", *versions[:-1]):
        assert metric(final, "densitywatch_model_info", stream="alpha", version=version) == 0
    assert metric(final, "densitywatch_model_info", stream="alpha", version=versions[-1]) == 1
    points = metric(final, "densitywatch_points_scored_total", stream="alpha")
    assert points == len(X) * len(traffic.seen)  # no score lost or double counted
    assert_attributed(traffic.seen, store)


# -- SIGTERM under load (a real `densitywatch serve` process) ------------------------------
def _serve(store: Path, port: int, grace_s: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DENSITYWATCH_GRACE_PERIOD_S": str(grace_s),
        "DENSITYWATCH_GRPC_HOST": "127.0.0.1",
        "DENSITYWATCH_METRICS_HOST": "127.0.0.1",
    }
    command = [sys.executable, "-m", "densitywatch", "serve", "--store", str(store)]
    command += ["--port", str(port), "--metrics-port", str(free_port())]
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def _wait_ready(client: Client, proc: subprocess.Popen[str]) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            client.score("alpha", X, timeout=1)
            return
        except DensityWatchError:
            time.sleep(0.1)
    raise AssertionError("server never served")


def test_sigterm_under_load_answers_every_accepted_call_and_exits_0(
    built_store: tuple[Path, dict],
) -> None:
    grace_s = 10.0
    port = free_port()
    proc = _serve(built_store[0], port, grace_s)
    outcomes: list[str] = []
    stream_outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()
    try:
        with Client(f"127.0.0.1:{port}", timeout=15) as client:
            _wait_ready(client, proc)
            stop = threading.Event()
            x = pair_data(200, 4, 0.0)

            def unary() -> None:
                while not stop.is_set():
                    try:
                        assert len(client.score("alpha", x).log_prob) == len(x)
                        code = "OK"
                    except DensityWatchError as e:
                        code = e.code.name
                    with lock:
                        outcomes.append(code)
                    if code != "OK":
                        return

            def streaming() -> None:
                n = 0
                try:
                    for r in client.score_stream("alpha", itertools.repeat(x)):
                        assert (r.request_id, len(r.log_prob)) == (str(n), len(x))
                        n += 1
                        if stop.is_set():
                            break
                    code = "OK"
                except DensityWatchError as e:
                    code = e.code.name
                with lock:
                    stream_outcomes.append((n, code))

            threads = [threading.Thread(target=unary) for _ in range(8)]
            threads += [threading.Thread(target=streaming) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=grace_s + 10)
            took = time.monotonic() - sent
            stop.set()
            for t in threads:
                t.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0 and took < grace_s
    # Every call was answered: scored in full, or refused with UNAVAILABLE (draining/gone).
    assert set(outcomes) <= {"OK", "UNAVAILABLE"} and outcomes.count("OK") > 8
    assert len(stream_outcomes) == 2
    assert all(status in ("OK", "UNAVAILABLE") and n > 0 for n, status in stream_outcomes)
    assert grpc.StatusCode.UNAVAILABLE.name in outcomes  # the drain really happened under load
    err = proc.stderr.read() if proc.stderr else ""
    assert "draining" in err and "Traceback" not in err
