"""StreamModel and the Batcher, without gRPC: coalescing and what each request gets back."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_support import hosts_data

from density.model import log_prob_numpy
from service.metrics import ServiceMetrics
from service.scorer import Batcher, Job, Scores, StreamModel


@pytest.fixture()
def hosts(built_store: tuple[Path, dict[str, Any]]) -> tuple[StreamModel, ServiceMetrics]:
    artifact = built_store[1]["hosts"]
    metrics = ServiceMetrics(max_streams=4)
    calibration = artifact.manifest.calibration
    return StreamModel(artifact, metrics.bind("hosts", artifact.version, calibration)), metrics


def _encoded(model: StreamModel, n: int, seed: int) -> np.ndarray:
    numbers, strings = hosts_data(n, seed=seed)
    return model.schema.encode(numbers, strings)


def test_terms_are_computed_only_when_asked(hosts: tuple[StreamModel, ServiceMetrics]) -> None:
    model, _ = hosts
    x = _encoded(model, 9, seed=1)
    plain, explained = model.score(x, terms=False), model.score(x, terms=True)
    assert plain.terms is None and explained.terms is not None
    np.testing.assert_array_equal(plain.log_p, explained.log_p)
    np.testing.assert_allclose(plain.log_p, log_prob_numpy(model.artifact.model, x), rtol=1e-6)
    assert explained.terms.shape == (9, len(model.feature_names))


def test_a_coalesced_batch_gets_terms_if_any_request_asks(
    hosts: tuple[StreamModel, ServiceMetrics],
) -> None:
    model, metrics = hosts
    batcher = Batcher(metrics, enabled=True, max_points=1000, max_delay_s=5.0, queue_limit=1000)
    first, second = _encoded(model, 3, seed=2), _encoded(model, 4, seed=3)
    results: dict[str, Scores] = {}
    with batcher.arriving() as late:  # the leader waits for this request to join its batch
        leader = threading.Thread(
            target=lambda: results.setdefault("first", batcher.score(Job(model, first, None)))
        )
        leader.start()
        while not batcher._queue:  # the leader has queued and now waits for `late`
            threading.Event().wait(0.001)
        results["second"] = batcher.score(Job(model, second, None, explain=True), late)
    leader.join(timeout=30)
    a, b = results["first"], results["second"]
    assert a.terms is not None and b.terms is not None  # one forward pass, with terms
    assert b.terms.shape == (4, len(model.feature_names))
    solo = model.score(np.concatenate([first, second]), terms=True)
    np.testing.assert_array_equal(np.concatenate([a.log_p, b.log_p]), solo.log_p)
    np.testing.assert_array_equal(b.terms, solo.terms[3:])
    batches = metrics.registry.get_sample_value("densitywatch_batch_size_count")
    assert batches == 1  # the two requests shared one forward pass
