"""Sample under the same limits as Score: the deadline stops the work, and the points it
draws count against the stream's queue."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from densitywatch.client import Client
from densitywatch.errors import DeadlineExceededError, ResourceExhaustedError
from tests.reliability.reliability_support import code_counts, wait_for
from tests.service.service_support import make_settings, metric, running_server, scrape

BIG = 200_000


def test_sample_stops_at_its_deadline(built_store: tuple[Path, dict[str, Any]]) -> None:
    settings = make_settings(built_store[0], max_points_per_call=BIG, queue_limit=BIG)
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        start = time.perf_counter()
        client.sample("hosts", BIG // 10, seed=1)
        tenth = time.perf_counter() - start  # what a tenth of the big sample takes
        with pytest.raises(DeadlineExceededError):
            client.sample("hosts", BIG, seed=1, timeout=tenth)
        samples: dict[Any, float] = {}

        def recorded() -> bool:
            samples.update(scrape(server.metrics_port))
            return code_counts(samples, "Sample").get("DEADLINE_EXCEEDED", 0) == 1

        # The server gives up near the deadline instead of drawing all the records.
        wait_for(recorded, timeout=30, what="the server records the missed deadline")
        spent = metric(
            samples,
            "densitywatch_request_duration_seconds_sum",
            method="Sample",
            code="DEADLINE_EXCEEDED",
        )
        assert spent < 4 * tenth, (spent, tenth)


def test_sample_counts_against_the_queue(built_store: tuple[Path, dict[str, Any]]) -> None:
    settings = make_settings(built_store[0], max_points_per_call=5000, queue_limit=1000)
    with running_server(settings) as server, Client(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ResourceExhaustedError, match="queue") as e:
            client.sample("hosts", 2000, seed=1)
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(client.sample("hosts", 1000, seed=1).numbers) == 1000
        assert metric(scrape(server.metrics_port), "densitywatch_queue_depth") == 0
