"""Calls to methods the service does not define, with and without tokens: they must not grow
the label set of densitywatch_request_duration_seconds (each path would be a new series)."""

from __future__ import annotations

import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest

from densitywatch.service.server import DensityWatchServer
from tests.service.service_support import make_settings, running_server, scrape

TOKEN = "labels-token-99ab"
CALLS = 5000
WAVE = 16  # well under the streams the server admits per connection


def duration_series(server: DensityWatchServer) -> set[tuple[tuple[str, str], ...]]:
    return {
        labels
        for name, labels in scrape(server.metrics_port)
        if name == "densitywatch_request_duration_seconds_count"
    }


def random_paths(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "._"
    services = [
        "densitywatch.v1.DensityWatch",  # real services, made-up methods
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ]
    paths = []
    for i in range(n):
        service = (
            rng.choice(services)
            if i % 3 == 0
            else "".join(rng.choices(alphabet, k=rng.randint(1, 30)))
        )
        method = "".join(rng.choices(alphabet, k=rng.randint(1, 30)))
        paths.append(f"/{service}/{method}{i:06d}")
    return paths


def _call_all(
    channel: grpc.Channel, paths: list[str], codes: Counter[grpc.StatusCode]
) -> list[str]:
    """Call every path (in waves: thousands at once overflow the socket); count the codes and
    return the paths to call again: a stream refused while the server had not yet counted the
    previous wave's closed (RST_STREAM REFUSED_STREAM, seen as UNAVAILABLE), which HTTP/2
    says to retry."""
    again = []
    for start in range(0, len(paths), WAVE):
        wave = paths[start : start + WAVE]
        futures = [
            channel.unary_unary(path, lambda b: b, lambda b: b).future(b"", timeout=20)
            for path in wave
        ]
        for path, future in zip(wave, futures, strict=True):
            code = future.exception().code()  # type: ignore[union-attr]
            if code == grpc.StatusCode.UNAVAILABLE:
                again.append(path)
            else:
                codes[code] += 1
    return again


@pytest.mark.parametrize("tokens", [False, True])
def test_unknown_methods_add_at_most_one_series(
    built_store: tuple[Path, dict[str, Any]], tokens: bool
) -> None:
    settings = make_settings(built_store[0], auth_tokens=[TOKEN] if tokens else [])
    with (
        running_server(settings) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        before = duration_series(server)
        codes: Counter[grpc.StatusCode] = Counter()
        pending = random_paths(CALLS, seed=int(tokens))
        for _ in range(50):
            pending = _call_all(channel, pending, codes)
            if not pending:
                break
        # With tokens, a caller without one learns nothing of which methods exist; health is
        # open, so its made-up methods are UNIMPLEMENTED either way.
        expected = {grpc.StatusCode.UNIMPLEMENTED}
        if tokens:
            expected.add(grpc.StatusCode.UNAUTHENTICATED)
        assert not pending, f"{len(pending)} calls still refused"
        assert set(codes) == expected and sum(codes.values()) == CALLS
        added = duration_series(server) - before
        assert len(added) <= 1, sorted(added)[:5]
        assert all(dict(labels)["method"] == "unknown" for labels in added)
