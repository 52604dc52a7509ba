"""StreamModel and the Batcher, without gRPC: coalescing and what each request gets back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from densitywatch.density.model import log_prob_numpy
from densitywatch.errors import DeadlineExceededError
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.scorer import Batcher, Job, Scores, StreamModel
from tests.service.service_support import hosts_data


@pytest.fixture()
def hosts(built_store: tuple[Path, dict[str, Any]]) -> tuple[StreamModel, ServiceMetrics]:
    artifact = built_store[1]["hosts"]
    metrics = ServiceMetrics(max_streams=4)
    calibration = artifact.manifest.calibration
    return StreamModel(artifact, metrics.bind("hosts", artifact.version, calibration)), metrics


def _encoded(model: StreamModel, n: int, seed: int) -> np.ndarray:
    numbers, strings = hosts_data(n, seed=seed)
    return model.schema.encode(numbers, strings)


def _until(condition: Callable[[], object]) -> None:
    """Spin (1 ms steps) until another thread makes `condition()` true."""
    while not condition():
        threading.Event().wait(0.001)


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
        _until(lambda: batcher._queue)  # the leader has queued and now waits for `late`
        results["second"] = batcher.score(Job(model, second, None, explain=True), late)
    leader.join(timeout=30)
    a, b = results["first"], results["second"]
    assert a.terms is not None and b.terms is not None  # one forward pass, with terms
    assert b.terms.shape == (4, len(model.feature_names))
    solo = model.score(np.concatenate([first, second]), terms=True)
    np.testing.assert_array_equal(np.concatenate([a.log_p, b.log_p]), solo.log_p)
    assert solo.terms is not None
    np.testing.assert_array_equal(b.terms, solo.terms[3:])
    batches = metrics.registry.get_sample_value("densitywatch_batch_size_count")
    assert batches == 1  # the two requests shared one forward pass


def _bookkeeping(metrics: ServiceMetrics) -> dict[str, float]:
    """The scoring metrics' samples (points, outliers, the log p histogram), without the
    `_created` timestamps (when each registry made its series)."""
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in metrics.registry.collect()
        for s in family.samples
        if family.name
        in ("densitywatch_points_scored", "densitywatch_outliers", "densitywatch_log_prob")
        and not s.name.endswith("_created")
    }


def test_one_point_is_assessed_like_a_point_of_a_batch(
    built_store: tuple[Path, dict[str, Any]],
) -> None:
    """The single-point path (Python floats) gives the batch path's p-values, levels and
    metrics, at the thresholds and calibration scores themselves and between them."""
    artifact = built_store[1]["hosts"]
    calibration = artifact.manifest.calibration
    assert calibration is not None
    cal = np.asarray([*calibration.tail, *calibration.quantiles])
    thresholds = np.asarray([lv.threshold for lv in calibration.levels])
    models = []
    for _ in range(2):
        metrics = ServiceMetrics(max_streams=4)
        stream = metrics.bind("hosts", artifact.version, calibration)
        models.append((StreamModel(artifact, stream, trace=False), metrics))
    (batch_model, batch_metrics), (one_model, one_metrics) = models
    buckets = stream.log_prob.bounds  # a value on a bucket bound counts in that bucket (le)
    log_p = np.concatenate(
        [thresholds, np.nextafter(thresholds, -np.inf), cal, cal - 1e-9, buckets, [-1e9, 1e3]]
    )
    batch = batch_model.assess(log_p)
    ones = [one_model.assess(log_p[i : i + 1]) for i in range(len(log_p))]
    np.testing.assert_array_equal(np.concatenate([o.p_value for o in ones]), batch.p_value)
    assert np.concatenate([o.level for o in ones]).tolist() == batch.level.tolist()
    assert {"warning", "critical", "normal"} <= set(batch.level.tolist())
    got, expected = _bookkeeping(one_metrics), _bookkeeping(batch_metrics)
    assert got.keys() == expected.keys()
    for key, value in expected.items():  # the sum of log p is added in a different order
        assert got[key] == pytest.approx(value, rel=1e-12), key


class _SlowModel:
    """Stands in for a StreamModel: log p = row sums, and records overlapping passes."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.batches: list[int] = []

    def score(self, x: np.ndarray, terms: bool = True) -> Scores:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.batches.append(len(x))
        threading.Event().wait(self.delay_s)
        with self.lock:
            self.running -= 1
        log_p = x.sum(axis=1)
        return Scores(self, log_p, log_p, log_p, None)  # type: ignore[arg-type]


def test_a_call_on_an_idle_stream_is_its_own_batch_and_frees_its_slot() -> None:
    """The idle-stream path (no queue, no arrival to wait for) scores the job at once and
    leaves the batcher as it found it; a call arriving meanwhile queues behind it."""
    model = _GatedModel(gated=1)
    metrics = ServiceMetrics(max_streams=4)
    batcher = Batcher(
        metrics, enabled=True, max_points=100, max_delay_s=0.5, queue_limit=100, concurrency=1
    )
    first, second = np.ones((2, 3)), np.full((3, 3), 2.0)
    results: dict[str, np.ndarray] = {}
    lone = threading.Thread(
        target=lambda: results.setdefault(
            "first",
            batcher.score(Job(model, first, None)).log_p,  # type: ignore[arg-type]
        )
    )
    lone.start()
    _until(lambda: model.running == 1)
    assert not batcher._queue and batcher._leaders == 1  # scoring without having queued
    behind = threading.Thread(
        target=lambda: results.setdefault(
            "second",
            batcher.score(Job(model, second, None)).log_p,  # type: ignore[arg-type]
        )
    )
    behind.start()
    _until(lambda: batcher._queue)  # the slot is taken: the second call waits its turn
    model.gate.set()
    lone.join(timeout=30)
    behind.join(timeout=30)
    np.testing.assert_array_equal(results["first"], first.sum(axis=1))
    np.testing.assert_array_equal(results["second"], second.sum(axis=1))
    assert model.batches == [2, 3]
    assert batcher._leaders == 0 and not batcher._queue and batcher._queued == 0


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_every_job_gets_its_own_scores_under_concurrent_leaders(concurrency: int) -> None:
    """Many callers, batches capped below their sum (a leader's own job can miss its batch):
    each gets exactly its rows back, at most `concurrency` passes overlap, state drains."""
    model = _SlowModel(delay_s=0.002)
    metrics = ServiceMetrics(max_streams=4)
    batcher = Batcher(
        metrics,
        enabled=True,
        max_points=10,
        max_delay_s=0.0,
        queue_limit=10_000,
        concurrency=concurrency,
    )
    rng = np.random.default_rng(concurrency)
    inputs = [rng.normal(size=(int(rng.integers(1, 9)), 3)) for _ in range(120)]
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        results[i] = batcher.score(Job(model, inputs[i], None)).log_p  # type: ignore[arg-type]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a caller never got its result"
    for i, x in enumerate(inputs):
        np.testing.assert_array_equal(results[i], x.sum(axis=1))
    assert max(model.batches) <= 10 and sum(model.batches) == sum(len(x) for x in inputs)
    assert model.most_running <= concurrency
    if concurrency > 1:
        assert model.most_running > 1  # passes did overlap
    assert batcher._leaders == 0 and not batcher._queue and batcher._queued == 0
    assert metrics.registry.get_sample_value("densitywatch_queue_depth") == 0


class _GatedModel(_SlowModel):
    """Its first `gated` passes block until `gate` is set; later passes return at once."""

    def __init__(self, gated: int) -> None:
        super().__init__(delay_s=0.0)
        self.gate = threading.Event()
        self.gated = gated

    def score(self, x: np.ndarray, terms: bool = True) -> Scores:
        with self.lock:
            wait = len(self.batches) < self.gated
        if wait:
            with self.lock:
                self.running += 1
            self.gate.wait(30)
            with self.lock:
                self.running -= 1
        return super().score(x, terms)


class _LateWake(threading.Event):
    """An event whose waiter, once woken, sleeps `late_s` more: a thread the OS is slow to
    schedule, which widens a race window from microseconds to a deterministic gap."""

    def __init__(self, late_s: float) -> None:
        super().__init__()
        self.late_s = late_s

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        if woken:
            time.sleep(self.late_s)
        return woken


def test_a_promoted_job_scored_by_another_leader_gives_its_slot_back() -> None:
    """Two leaders finish and promote the queued c and d; c wakes first and scores c and d
    together, so d wakes settled but holding a slot. Without giving it back the stream
    would run with one leader fewer from then on."""
    model = _GatedModel(gated=2)
    batcher = Batcher(
        ServiceMetrics(max_streams=4),
        enabled=True,
        max_points=2,
        max_delay_s=0.0,
        queue_limit=100,
        concurrency=2,
    )
    threads: list[threading.Thread] = []

    def call(late_s: float) -> None:
        job = Job(model, np.ones((1, 3)), None, event=_LateWake(late_s))  # type: ignore[arg-type]
        thread = threading.Thread(target=batcher.score, args=(job,))
        threads.append(thread)
        thread.start()

    call(0.0)
    call(0.0)
    _until(lambda: model.running == 2)  # a and b lead, blocked in their passes
    for i, late_s in enumerate([0.05, 0.3, 0.0]):  # c, d, e queue in this order
        call(late_s)

        def queued(n: int = i + 1) -> bool:
            return len(batcher._queue) == n

        _until(queued)
    model.gate.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert model.batches == [1, 1, 2, 1]  # a, b, then c with d, then e
    assert batcher._leaders == 0 and not batcher._queue and batcher._queued == 0


def _one_leader(metrics: ServiceMetrics) -> Batcher:
    """A batcher whose second caller must queue behind the first's forward pass."""
    return Batcher(
        metrics, enabled=True, max_points=100, max_delay_s=0.0, queue_limit=100, concurrency=1
    )


def test_a_follower_past_its_deadline_leaves_the_queue() -> None:
    model = _SlowModel(delay_s=0.3)
    metrics = ServiceMetrics(max_streams=4)
    batcher = _one_leader(metrics)
    slow = threading.Thread(
        target=lambda: batcher.score(Job(model, np.ones((2, 3)), None))  # type: ignore[arg-type]
    )
    slow.start()
    _until(lambda: model.running)
    late = Job(model, np.ones((1, 3)), time.monotonic() + 0.05)  # type: ignore[arg-type]
    with pytest.raises(DeadlineExceededError):
        batcher.score(late)
    slow.join(timeout=30)
    assert model.batches == [2]  # the late job was never scored
    assert batcher._leaders == 0 and not batcher._queue and batcher._queued == 0


@pytest.mark.parametrize("n", [1, 2, 17, 300])
def test_the_traced_model_scores_bit_for_bit_like_the_eager_one(
    hosts: tuple[StreamModel, ServiceMetrics], n: int
) -> None:
    model, _ = hosts
    assert isinstance(model.log_p, torch.jit.ScriptModule)  # numbers and strings: traceable
    eager = StreamModel(model.artifact, model.metrics, trace=False)
    assert eager.log_p is eager.model
    x = _encoded(model, n, seed=n)
    np.testing.assert_array_equal(model.forward(x, terms=False)[0], eager.forward(x, False)[0])


def test_a_model_that_cannot_be_traced_is_served_eagerly(
    hosts: tuple[StreamModel, ServiceMetrics],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, _ = hosts

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(torch.jit, "trace", fail)
    with caplog.at_level("WARNING", logger="densitywatch.service.scorer"):
        fresh = StreamModel(model.artifact, model.metrics)
    assert fresh.log_p is fresh.model
    assert f"stream 'hosts' version {model.version} eagerly: tracing failed: cannot trace" in (
        caplog.text
    )
    x = _encoded(model, 5, seed=0)
    np.testing.assert_array_equal(fresh.forward(x, False)[0], model.forward(x, False)[0])


def test_queue_depth_counts_points_waiting_behind_a_forward_pass() -> None:
    model = _SlowModel(delay_s=0.3)
    metrics = ServiceMetrics(max_streams=4)
    batcher = _one_leader(metrics)

    def depth() -> float | None:
        return metrics.registry.get_sample_value("densitywatch_queue_depth")

    calls = [
        threading.Thread(target=lambda n=n: batcher.score(Job(model, np.ones((n, 3)), None)))  # type: ignore[arg-type, misc]
        for n in (2, 3)
    ]
    calls[0].start()
    _until(lambda: model.running)
    assert depth() == 0  # the first call's points are being scored, not waiting
    calls[1].start()
    _until(lambda: batcher._queue)
    assert depth() == 3
    for t in calls:
        t.join(timeout=30)
    assert depth() == 0 and model.batches == [2, 3]
