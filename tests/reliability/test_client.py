"""The light client under careless use: it raises rather than aborting its host process,
and an empty sample is an empty result."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.api.v1 import densitywatch_pb2_grpc as pb_grpc
from densitywatch.client import Client
from densitywatch.errors import DensityWatchError
from densitywatch.service.settings import ServiceSettings
from tests.reliability.reliability_support import code_counts
from tests.service.service_support import make_settings, running_server, scrape

HALF_PAIR = """
from densitywatch.client import Client
for kwargs in ({"client_certificate": b"-----BEGIN CERTIFICATE-----"},
               {"client_key": b"-----BEGIN PRIVATE KEY-----"}):
    try:
        Client("127.0.0.1:1", **kwargs)
    except ValueError as e:
        print("ValueError:", e)
"""


def test_half_a_client_key_pair_raises_instead_of_aborting() -> None:
    # In a child process: before the check, grpc ended the process with SIGABRT.
    done = subprocess.run(
        [sys.executable, "-c", HALF_PAIR], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all("client_certificate" in line for line in lines)
    with pytest.raises(ValueError, match="together"):
        Client("127.0.0.1:1", client_key=b"key")


def test_sampling_zero_records_is_an_empty_result(client: Client) -> None:
    empty = client.sample("hosts", 0, seed=1)
    assert empty.numbers.shape == (0, 3) and empty.strings == [] and empty.records() == []
    assert empty.model_version == "000002"


class FlakyScore(pb_grpc.DensityWatchServicer):
    """Answers Score UNAVAILABLE for the first `failures` attempts, then a fixed response."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0

    def Score(  # noqa: N802 (the generated servicer's method name)
        self, request: pb.ScoreRequest, context: grpc.ServicerContext
    ) -> pb.ScoreResponse:
        self.attempts += 1
        if self.attempts <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "refused: retry")
        return pb.ScoreResponse(stream=request.stream, model_version="000001", log_prob=[-1.0])


@contextmanager
def flaky_server(failures: int) -> Iterator[tuple[FlakyScore, int]]:
    servicer = FlakyScore(failures)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_DensityWatchServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(0)


def _score_one(client: Client) -> pb.ScoreResponse:
    request = pb.ScoreRequest(stream="alpha")
    return client.stub.Score(request, timeout=10)


def test_a_call_refused_unavailable_is_sent_again() -> None:
    """UNAVAILABLE means the server did not run the call (a stream over its connection's
    limit, a draining replica); every method only reads, so the client sends it again."""
    with flaky_server(failures=3) as (servicer, port), Client(f"127.0.0.1:{port}") as client:
        assert list(_score_one(client).log_prob) == [-1.0]
        assert servicer.attempts == 4


def test_retries_stop_after_five_attempts() -> None:
    with flaky_server(failures=100) as (servicer, port), Client(f"127.0.0.1:{port}") as client:
        with pytest.raises(grpc.RpcError) as failed:
            _score_one(client)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert servicer.attempts == 5


def test_32_threads_on_one_client_are_all_answered_at_the_default_limits(
    built_store: tuple[Path, dict[str, Any]],
) -> None:
    """A client near the per-connection stream limit sees some streams refused (the server
    counts a finished call's stream a moment after the client does); at the defaults, 32
    threads sharing one client are all answered, each call run exactly once."""
    defaults = {
        name: ServiceSettings.model_fields[name].default
        for name in ("thread_pool_size", "max_concurrent_streams_per_connection")
    }
    settings = make_settings(built_store[0], **defaults)
    outcomes: Counter[str] = Counter()
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:

        def caller() -> None:
            for _ in range(40):
                try:
                    client.score("alpha", np.zeros((1, 2)))
                    outcomes["ok"] += 1
                except DensityWatchError as e:
                    outcomes[type(e).__name__] += 1

        threads = [threading.Thread(target=caller) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered = sum(code_counts(scrape(server.metrics_port), "Score").values())
    assert outcomes == {"ok": 32 * 40}, outcomes
    assert answered == 32 * 40  # a refused stream never reached a handler: none ran twice
