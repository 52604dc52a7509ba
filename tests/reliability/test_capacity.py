"""Capacity under hostile callers, through the real server: calls that send headers but never
a message, and open health Watch calls, must not take the threads an authenticated caller
needs to score, nor the ones health needs to answer."""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from densitywatch.client import Client
from densitywatch.errors import DensityWatchError
from densitywatch.service.server import DensityWatchServer
from densitywatch.service.settings import ServiceSettings
from tests.reliability.reliability_support import code_counts, wait_for
from tests.service.service_support import make_settings, running_server, scrape

TOKEN = "victim-token-3c9e1f"
SCORE = "/densitywatch.v1.DensityWatch/Score"
X = np.zeros((1, 2))
P99_BOUND_MS = 50.0
# grpc shares one connection among a process's channels to the same target with the same
# options; each channel here must be a connection of its own, as another process's would be.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}", options=OWN_CONNECTION)


def _settings(store: Path, **overrides: Any) -> Any:
    # The capacity settings at their defaults (make_settings shrinks the pool for other tests).
    default_pool = ServiceSettings.model_fields["thread_pool_size"].default
    values: dict[str, Any] = {"thread_pool_size": default_pool, "auth_tokens": [TOKEN]}
    values.update(overrides)
    return make_settings(store, **values)


@pytest.fixture(scope="module")
def token_server(built_store: tuple[Path, dict[str, Any]]) -> Iterator[DensityWatchServer]:
    with running_server(_settings(built_store[0])) as server:
        yield server


class HeaderOnly:
    """`calls` calls of `method` spread over `connections` channels, each sending its headers
    and then never a message (the request iterator blocks until the block exits)."""

    def __init__(
        self,
        port: int,
        method: str,
        calls: int,
        connections: int,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self._release = threading.Event()
        self._channels = [channel(port) for _ in range(connections)]
        self._method = method
        self._calls_n = calls
        self._metadata = metadata
        self.calls: list[Any] = []

    def _never(self) -> Iterator[bytes]:
        self._release.wait()
        return
        yield b""  # a generator that yields nothing until released

    def __enter__(self) -> HeaderOnly:
        for i in range(self._calls_n):
            channel = self._channels[i % len(self._channels)]
            call = channel.stream_stream(self._method, lambda b: b, lambda b: b)
            self.calls.append(call(self._never(), metadata=self._metadata))
        return self

    def codes(self) -> list[grpc.StatusCode | None]:
        """Each call's status, None while it is still open."""
        return [c.code() if c.done() else None for c in self.calls]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release.set()
        for call in self.calls:
            call.cancel()
        for open_channel in self._channels:
            open_channel.close()


def victim_p99_ms(port: int, seconds: float = 0.6) -> float:
    """p99 latency of an authenticated caller scoring one point at a time on its own
    connection; a call that fails (its deadline passed) counts as taking forever."""
    latencies = []
    with Client(f"127.0.0.1:{port}", token=TOKEN, timeout=1.0) as client:
        client.score("alpha", X)  # the connection is up before timing starts
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            try:
                client.score("alpha", X)
                latencies.append((time.perf_counter() - start) * 1000)
            except DensityWatchError:
                latencies.append(float("inf"))
    return float(np.percentile(latencies, 99))


def health_answers(port: int) -> bool:
    with channel(port) as health_channel:
        try:
            response = health_pb2_grpc.HealthStub(health_channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def settled(attack: HeaderOnly) -> None:
    """Give the server time to take (or refuse) every call the attack opened."""
    time.sleep(0.3)


@pytest.mark.parametrize(("calls", "connections"), [(64, 1), (500, 1), (64, 16), (500, 16)])
def test_unauthenticated_header_only_calls_are_refused_at_the_headers(
    token_server: DensityWatchServer, calls: int, connections: int
) -> None:
    with HeaderOnly(token_server.port, SCORE, calls, connections) as attack:
        # Refused from the headers alone, while the callers still hold their message back.
        wait_for(
            lambda: all(code is not None for code in attack.codes()),
            timeout=10,
            what="every header-only call answered",
        )
        # Some may be refused before the server even made them calls: a connection's first
        # streams can outrun its stream limit (RST_STREAM REFUSED_STREAM, seen as UNAVAILABLE).
        codes = set(attack.codes())
        assert grpc.StatusCode.UNAUTHENTICATED in codes
        assert codes <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE}
        assert victim_p99_ms(token_server.port) < P99_BOUND_MS
        assert health_answers(token_server.port)


@pytest.mark.parametrize("calls", [64, 500])
def test_one_authenticated_connection_cannot_hold_the_pool(
    token_server: DensityWatchServer, calls: int
) -> None:
    bearer = (("authorization", f"Bearer {TOKEN}"),)
    with HeaderOnly(token_server.port, SCORE, calls, 1, metadata=bearer) as attack:
        settled(attack)
        assert victim_p99_ms(token_server.port) < P99_BOUND_MS
        assert health_answers(token_server.port)


def test_open_health_watches_hold_no_threads(token_server: DensityWatchServer) -> None:
    channels = [channel(token_server.port) for _ in range(8)]
    try:
        watches = [
            health_pb2_grpc.HealthStub(channels[i % len(channels)]).Watch(
                health_pb2.HealthCheckRequest()
            )
            for i in range(64)
        ]
        for watch in watches:  # every one is really open: it has its first answer
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        assert victim_p99_ms(token_server.port) < P99_BOUND_MS
        assert health_answers(token_server.port)
        for watch in watches:
            watch.cancel()
    finally:
        for open_channel in channels:
            open_channel.close()


def test_a_call_whose_message_never_arrives_is_cancelled(
    built_store: tuple[Path, dict[str, Any]],
) -> None:
    settings = _settings(built_store[0], auth_tokens=[], request_message_timeout_s=0.3)
    with (
        running_server(settings) as server,
        HeaderOnly(server.port, SCORE, 3, 1) as attack,
    ):
        start = time.monotonic()
        wait_for(
            lambda: all(code is not None for code in attack.codes()),
            timeout=3,
            what="the server gives up on the missing messages",
        )
        assert time.monotonic() - start < 2
        assert set(attack.codes()) == {grpc.StatusCode.CANCELLED}
        counts = code_counts(scrape(server.metrics_port), "Score")
        assert counts.get("CANCELLED") == 3
        with Client(f"127.0.0.1:{server.port}") as client:  # the threads came back
            assert len(client.score("alpha", X).log_prob) == 1


WAVE, WAVES = 32, 10  # half the default streams per connection, as a client should


@pytest.mark.parametrize("token", [None, TOKEN])
def test_failed_calls_release_their_streams(
    token_server: DensityWatchServer, token: str | None
) -> None:
    """Calls that fail (refused without a token; INVALID_ARGUMENT with one) must give their
    HTTP/2 stream back when they end, not when the garbage collector next runs: on one
    connection, once the kept streams reach the connection's limit every later call would
    be refused."""
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    expected = grpc.StatusCode.INVALID_ARGUMENT if token else grpc.StatusCode.UNAUTHENTICATED
    bad = b"\xff\xff"  # not a protobuf message
    gc.disable()  # what a busy server between two collections sees
    try:
        with channel(token_server.port) as one:
            score = one.unary_unary(SCORE, lambda b: b, lambda b: b)
            codes: Counter[grpc.StatusCode] = Counter()
            for _ in range(WAVES):
                calls = [score.future(bad, timeout=5, metadata=metadata) for _ in range(WAVE)]
                codes.update(call.exception().code() for call in calls)  # type: ignore[union-attr]
    finally:
        gc.enable()
    # A call refused from its headers can end before the server has read the caller's
    # end of stream, and a stream opened in that gap is refused (REFUSED_STREAM, retryable):
    # a few such are HTTP/2; a stream kept per failed call would refuse all after one wave.
    assert set(codes) <= {expected, grpc.StatusCode.UNAVAILABLE}
    assert codes[expected] >= WAVE * (WAVES - 1), codes
