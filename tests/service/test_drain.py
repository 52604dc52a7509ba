"""`python -m densitywatch serve` in a subprocess: SIGTERM drains in-flight calls, exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from densitywatch.client import Client
from densitywatch.errors import DensityWatchError
from tests.service.service_support import free_port, pair_data


def _wait_serving(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise AssertionError("server never became SERVING")


def test_sigterm_drains_in_flight_calls_and_exits_0(built_store: tuple[Path, dict]) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DENSITYWATCH_GRACE_PERIOD_S": "20",
        "DENSITYWATCH_MAX_POINTS_PER_CALL": "400000",
        "DENSITYWATCH_QUEUE_LIMIT": "2000000",
        "DENSITYWATCH_GRPC_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "densitywatch",
            "serve",
            "--store",
            str(built_store[0]),
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_serving(port, proc)
        with Client(f"127.0.0.1:{port}", timeout=60) as client:
            big = pair_data(300_000, 1, 0.0)
            small = pair_data(10, 2, 0.0)
            with ThreadPoolExecutor(8) as pool:
                slow = pool.submit(client.score, "alpha", big)
                burst = [pool.submit(client.score, "alpha", small) for _ in range(7)]
                time.sleep(0.2)  # the slow call is in flight
                proc.send_signal(signal.SIGTERM)
                assert len(slow.result().log_prob) == 300_000
                assert all(len(f.result().log_prob) == 10 for f in burst)
            rejected = threading.Event()
            try:
                client.score("alpha", small, timeout=5)
            except DensityWatchError as e:  # draining or gone: UNAVAILABLE
                rejected.set()
                assert e.code == grpc.StatusCode.UNAVAILABLE
            assert rejected.is_set()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "draining" in (proc.stderr.read() if proc.stderr else "")
    np.testing.assert_equal(proc.returncode, 0)
