"""Scoring: a loaded stream version ready for inference, and the dynamic batcher.

Batching is leader/follower rather than a dedicated thread: the request that finds the
stream idle runs the forward pass itself (no thread hand-off, so a lone client pays no
batching latency); requests arriving meanwhile queue up, and when the leader finishes it
promotes the oldest waiting request, which scores everything queued behind it in one pass.
Up to `concurrency` leaders run at once: each forward pass is single-threaded, so a second
one uses a core the first leaves idle while the gRPC threads wait for it.
A batch only ever holds requests encoded for the same `StreamModel`, and that object is
what every point in the batch is attributed to, so a hot swap never mixes versions.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from densitywatch.density.artifact import Artifact
from densitywatch.density.calibration import (
    NORMAL,
    Calibration,
    conformal_p_value,
    conformal_p_values,
    quantile_grid,
)
from densitywatch.density.model import DensityModel
from densitywatch.errors import (
    ArtifactCorruptError,
    DeadlineExceededError,
    ResourceExhaustedError,
)
from densitywatch.service.convert import PointEncoder
from densitywatch.service.metrics import ServiceMetrics, StreamMetrics

log = logging.getLogger(__name__)


#: Points drawn from a model and scored when it loads.
PROBE_POINTS = 16


def traced_log_p(
    model: DensityModel, name: str = "the model", probe: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The folded model's log p (`DensityModel.forward`) as a frozen TorchScript trace, else
    the model itself.

    A trace runs the whole pass in C++ and takes the GIL once instead of once per tensor
    operation (about 55), which is what lets concurrent forward passes and the gRPC threads
    share the cores. It is the same graph of the same kernels: the trace is used only if its
    output equals the eager module's bit for bit at two batch sizes; otherwise (or if
    tracing fails) the eager module serves, with a warning naming `name`. `torch.jit.trace`
    is deprecated upstream (torch 2.13 still ships it; `DENSITYWATCH_TRACE_MODELS=false`
    turns it off). `probe`: points to trace with and compare on (default: 9 drawn from the
    model).
    """
    if probe is None:
        probe = model.sample(9, torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit", category=DeprecationWarning)
            with torch.inference_mode():
                traced = torch.jit.trace(model, probe[:4], check_trace=False)
            traced = torch.jit.freeze(traced)  # weights and buffers become constants
            with torch.inference_mode():
                same = all(torch.equal(traced(p), model(p)) for p in (probe[:1], probe))
    except Exception as e:  # a model that cannot be traced is still served, eagerly
        log.warning("serving %s eagerly: tracing failed: %s", name, e)
        return model
    if not same:
        log.warning("serving %s eagerly: its trace's log p differs from the eager one", name)
        return model
    return traced  # type: ignore[no-any-return]


class StreamModel:
    """One version of one stream, folded and precomputed for serving (immutable)."""

    def __init__(self, artifact: Artifact, metrics: StreamMetrics, trace: bool = True) -> None:
        calibration = artifact.manifest.calibration
        if calibration is None:
            raise ValueError(f"{artifact.stream} {artifact.version} has no calibration")
        self.artifact = artifact
        self.stream = artifact.stream
        self.version = artifact.version
        self.calibration: Calibration = calibration
        self.schema = artifact.manifest.feature_schema
        self.encoder = PointEncoder(self.schema)
        self.feature_names = self.schema.names
        self.model = artifact.model.fold()
        name = f"stream {self.stream!r} version {self.version}"
        probe = self._probe_points()
        self.log_p = traced_log_p(self.model, name, probe) if trace else self.model
        self._check_probe(probe.double().numpy())
        self.metrics = metrics
        # Least severe first: level i + 1 of `level_names` is row i of `crossed`.
        levels = sorted(calibration.levels, key=lambda lv: -lv.target_fpr)
        self.level_names = np.asarray([NORMAL, *(lv.name for lv in levels)], dtype=object)
        self._thresholds = np.asarray([[lv.threshold] for lv in levels], dtype=np.float64)
        self._level_ids = np.arange(1, len(levels) + 1, dtype=np.intp)[:, None]
        # Metric order is the calibration's own level order.
        self._metric_order = [levels.index(lv) for lv in calibration.levels]
        self._tail = np.asarray(calibration.tail, dtype=np.float64)
        self._quantiles = np.asarray(calibration.quantiles, dtype=np.float64)
        self._grid = quantile_grid(len(self._quantiles))
        self._n_scores = calibration.n_scores
        # The same, as Python floats, for `_assess_one`.
        self._threshold_list = self._thresholds[:, 0].tolist()
        self._tail_list = self._tail.tolist()
        self._quantile_list = self._quantiles.tolist()
        self._grid_list = self._grid.tolist()

    def _probe_points(self) -> torch.Tensor:
        """Points drawn from the model itself, to trace with and to score at load."""
        try:
            with torch.inference_mode():
                return self.model.sample(PROBE_POINTS, torch.Generator().manual_seed(0))
        except Exception as e:  # a model that cannot even sample is broken
            raise ArtifactCorruptError(
                f"the weights are broken: drawing probe points fails ({type(e).__name__})"
            ) from e

    def _check_probe(self, x: np.ndarray) -> None:
        """Score the probe points by both serving paths: a version that loads but gives a
        non-finite log p or explanation (NaN or overflowing weights) would score every point
        `normal`, or fail every call, and must never serve."""
        try:
            fast, _ = self.forward(x, terms=False)
            total, terms = self.forward(x)
        except Exception as e:
            raise ArtifactCorruptError(
                f"the weights are broken: scoring probe points fails ({type(e).__name__})"
            ) from e
        outputs = (fast, total, terms, x)
        if not all(np.isfinite(a).all() for a in outputs if a is not None):
            raise ArtifactCorruptError("the weights are broken: probe points score NaN or inf")

    def forward(self, x: np.ndarray, terms: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Encoded (n, D) -> log p (n,) and, if asked, per-feature terms (n, D); float64."""
        if len(x) == 0:  # an empty batch is valid; the network cannot reshape zero rows
            return np.zeros(0), np.zeros((0, x.shape[1])) if terms else None
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            if not terms:
                return self.log_p(xt).double().numpy(), None
            out = self.model.log_prob(xt)
            return out.total.double().numpy(), out.terms.double().numpy()

    # The helpers below run once per batch, often of one point: they keep to few numpy
    # calls, each of which costs microseconds on caches the forward pass has just evicted.
    def crossed(self, log_p: np.ndarray) -> np.ndarray:
        """(levels, n) bool, least severe level first: log p below each threshold."""
        return log_p < self._thresholds

    def levels_of(self, crossed: np.ndarray) -> np.ndarray:
        """Most severe level crossed per point (object array of names, "normal" if none)."""
        if not len(crossed):
            return self.level_names[np.zeros(crossed.shape[1], dtype=np.intp)]
        return self.level_names[(crossed * self._level_ids).max(axis=0)]

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Calibration.p_values with the tail, quantiles and their grid already arrays."""
        return conformal_p_values(
            scores, self._tail, self._quantiles, self._n_scores, grid=self._grid
        )

    def score(self, x: np.ndarray, terms: bool = True) -> Scores:
        """Score encoded points (with per-feature terms if asked) and record the metrics."""
        return self.assess(*self.forward(x, terms))

    def assess(self, log_p: np.ndarray, feature_terms: np.ndarray | None = None) -> Scores:
        """Levels and p-values of computed log p (n,); records the metrics."""
        if len(log_p) == 1:
            return self._assess_one(log_p, feature_terms)
        crossed = self.crossed(log_p)
        counts = crossed.sum(axis=1).tolist()
        self.metrics.record_batch(log_p, [counts[i] for i in self._metric_order])
        return Scores(self, log_p, self.p_values(log_p), self.levels_of(crossed), feature_terms)

    def _assess_one(self, log_p: np.ndarray, feature_terms: np.ndarray | None) -> Scores:
        """`assess` of one point in Python floats: the same levels, p-value and metrics,
        without the dozen numpy calls that would cost more than the forward pass."""
        value = log_p.item()
        crossed = [value < t for t in self._threshold_list]
        self.metrics.record_one(value, [crossed[i] for i in self._metric_order])
        level = max((i + 1 for i, hit in enumerate(crossed) if hit), default=0)
        p_value = conformal_p_value(
            value, self._tail_list, self._quantile_list, self._n_scores, self._grid_list
        )
        return Scores(
            self, log_p, np.array([p_value]), self.level_names[level : level + 1], feature_terms
        )


@dataclass
class Scores:
    """Scores of some points, all by `model`."""

    model: StreamModel
    log_p: np.ndarray
    p_value: np.ndarray
    level: np.ndarray
    terms: np.ndarray | None  # None: no request in the batch asked for explanations

    def slice(self, start: int, stop: int) -> Scores:
        """Points start to stop; the scores themselves when that is all of them (a lone
        caller's batch: no copies)."""
        if start == 0 and stop == len(self.log_p):
            return self
        return Scores(
            self.model,
            self.log_p[start:stop],
            self.p_value[start:stop],
            self.level[start:stop],
            None if self.terms is None else self.terms[start:stop],
        )


@dataclass(eq=False)
class Job:
    """One request's encoded points waiting to be scored."""

    model: StreamModel
    x: np.ndarray
    deadline: float | None  # time.monotonic() value, None: no deadline
    explain: bool = False  # wants per-feature terms
    # Created by the first wait: a lone caller leads its own batch and never waits.
    event: threading.Event | None = None
    lead: bool = False  # holds one of the batcher's `concurrency` leadership slots
    taken: bool = False  # in a batch being scored
    result: Scores | None = None
    error: BaseException | None = None

    @property
    def n(self) -> int:
        return len(self.x)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    @property
    def settled(self) -> bool:
        return self.result is not None or self.error is not None

    def finish(self, result: Scores | None = None, error: BaseException | None = None) -> None:
        """Called with the batcher's lock held (a waiter clears the event under it)."""
        if not self.settled:  # a waiter may already have given up on its deadline
            self.result, self.error = result, error
        self.wake()

    def wake(self) -> None:
        """Wake the job's waiter, if it has one (lock held: `_wait` creates the event under it)."""
        if self.event is not None:
            self.event.set()

    def outcome(self) -> Scores:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Arrival:
    """A request being decoded (`Batcher.arriving`); leaving the `with` block clears the mark
    unless `Batcher.score` already has."""

    __slots__ = ("_batcher", "done")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self.done = False

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.done:
            with self._batcher._cond:
                self._batcher._arrived(self)


def _expired_error() -> DeadlineExceededError:
    return DeadlineExceededError("the deadline passed before the points were scored")


class Batcher:
    """Per-stream dynamic batching with a bounded queue (see module docstring)."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        *,
        enabled: bool,
        max_points: int,
        max_delay_s: float,
        queue_limit: int,
        concurrency: int = 1,
    ) -> None:
        self._metrics = metrics
        self.enabled = enabled
        self.max_points = max_points
        self.max_delay_s = max_delay_s
        self.queue_limit = queue_limit
        self.concurrency = concurrency
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[Job] = deque()
        self._queued = 0  # points queued or, unbatched, in flight
        self._leaders = 0  # jobs holding a leadership slot (leading, or promoted and waking)
        self._arriving = 0
        metrics.track_queue(lambda: self._queued)

    def arriving(self) -> Arrival:
        """Mark a request as being decoded, so a leader may wait briefly for it to join; use
        as `with batcher.arriving() as arrival:`. The mark is cleared atomically with queueing
        (`score(job, arrival)`), or when the block exits."""
        with self._cond:
            self._arriving += 1
        return Arrival(self)

    def _arrived(self, arrival: Arrival | None) -> None:
        if arrival is not None and not arrival.done:
            arrival.done = True
            self._arriving -= 1
            self._cond.notify_all()

    def score(self, job: Job, arrival: Arrival | None = None) -> Scores:
        """Score a job, alone or coalesced with others; raises on a full queue or deadline."""
        if job.expired():
            raise _expired_error()
        if not self.enabled:
            return self._score_alone(job, arrival)
        with self._cond:
            self._arrived(arrival)
            self._admit_points(job.n)
            if self._leaders < self.concurrency:
                self._leaders += 1
                job.lead = True
                if not self._queue and not self._arriving:  # nothing to batch or wait for
                    self._release(job.n)
                    job.taken = True
            if not job.taken:
                self._queue.append(job)
                self._cond.notify_all()
        if job.taken:  # an idle stream: this job is the batch, as `_take_batch` would find
            self._lead(job, [job])
        # A job leaves only settled and without a slot: one promoted, but scored by another
        # leader before it woke, still leads one batch and then resigns its slot.
        while job.lead or not job.settled:
            if job.lead:
                self._lead(job)
            else:
                self._wait(job)
        return job.outcome()

    @contextmanager
    def reserved(self, n: int) -> Iterator[None]:
        """Hold `n` points of the queue while the block runs (work done outside batches, as
        sampling is, still counts against the limit); raises when they do not fit."""
        with self._cond:
            self._admit_points(n)
        try:
            yield
        finally:
            with self._cond:
                self._release(n)

    def _admit_points(self, n: int) -> None:
        if self._queued + n > self.queue_limit:
            raise ResourceExhaustedError(
                f"scoring queue full ({self._queued} points waiting, limit {self.queue_limit}): "
                "retry with backoff"
            )
        self._queued += n

    def _release(self, n: int) -> None:
        self._queued -= n

    def _score_alone(self, job: Job, arrival: Arrival | None) -> Scores:
        with self._cond:
            self._arrived(arrival)
            self._admit_points(job.n)
        try:
            if job.expired():
                raise _expired_error()
            self._metrics.batch_size.observe(job.n)
            return job.model.score(job.x, terms=job.explain)
        finally:
            with self._cond:
                self._release(job.n)

    def _wait(self, job: Job) -> None:
        """Follower: wait for a result, a promotion, or the deadline."""
        with self._cond:
            if job.lead or job.settled:
                return
            if job.event is None:
                job.event = threading.Event()
            event = job.event
        remaining = job.remaining()
        event.wait(None if remaining is None else max(remaining, 0.0))
        with self._cond:
            event.clear()  # finish() and promotion set it under the lock: nothing is lost
            if job.lead or job.settled or not job.expired():
                return
            if not job.taken:  # timed out while still queued: leave the queue
                self._queue.remove(job)
                self._release(job.n)
            job.error = _expired_error()

    def _lead(self, job: Job, batch: list[Job] | None = None) -> None:
        """Score one batch (`batch`, else one from the head of the queue). If `job` itself is
        still queued, keep leading; otherwise hand leadership to the oldest queued job that
        has none."""
        try:
            batch = self._take_batch() if batch is None else batch
            if batch:
                self._run(batch)
        finally:
            with self._cond:
                if job.taken or job.settled:
                    self._resign(job)

    def _resign(self, job: Job) -> None:
        """Give up `job`'s leadership slot (lock held): to the oldest queued job that has
        none, or back to the pool. Every slot taken is given up exactly once."""
        job.lead = False
        successor = next((j for j in self._queue if not j.lead), None)
        if successor is not None:
            successor.lead = True
            successor.wake()
        else:
            self._leaders -= 1

    def _take_batch(self) -> list[Job]:
        with self._cond:
            if self.max_delay_s > 0 and self._arriving:
                limit = time.monotonic() + self.max_delay_s
                while self._arriving and self._queued < self.max_points:
                    left = limit - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch: list[Job] = []
            points = 0
            while self._queue:
                job = self._queue[0]
                if batch and (job.model is not batch[0].model or points + job.n > self.max_points):
                    break
                self._queue.popleft()
                self._release(job.n)
                if job.expired():
                    job.finish(error=_expired_error())
                    continue
                job.taken = True
                batch.append(job)
                points += job.n
            return batch

    def _run(self, batch: list[Job]) -> None:
        try:
            xs = [job.x for job in batch]
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            self._metrics.batch_size.observe(len(x))
            scores = batch[0].model.score(x, terms=any(job.explain for job in batch))
        except Exception as exc:  # every waiter gets the error; the interceptor maps it
            with self._cond:
                for job in batch:
                    job.finish(error=exc)
            return
        with self._cond:
            start = 0
            for job in batch:
                job.finish(result=scores.slice(start, start + job.n))
                start += job.n
