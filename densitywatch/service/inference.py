"""The service's domain: scoring, explaining, sampling and classifying over the registry.

Each RPC of the servicer calls one method here with plain values and gets a plain result
back; protobuf stays in the servicer and `convert`. Points arrive in the API's columnar
layout (`PointsPayload`: flat numbers, flat strings, a count), which each stream's
`PointEncoder` validates against that stream's schema. A call's deadline arrives as its
clock (`Remaining`: seconds left, or None), read where the call would first wait.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from densitywatch.density.classify import posterior
from densitywatch.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from densitywatch.service.convert import PointsPayload
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.registry import Registry, StreamStatus
from densitywatch.service.scorer import Batcher, Job, Scores, StreamModel
from densitywatch.service.settings import ServiceSettings

Remaining = Callable[[], float | None]

# Records drawn per step of a Sample call; the deadline is checked between steps. A fixed
# number rather than a setting: the records a seed gives depend on it.
SAMPLE_STEP = 1000


@dataclass(frozen=True)
class Explanations:
    """Per point: every feature's log-prob term, and the `top_k` least probable features."""

    terms: np.ndarray  # (n, D)
    top: np.ndarray  # (n, top_k) feature indices, least probable first
    top_terms: np.ndarray  # (n, top_k)


@dataclass(frozen=True)
class Scored:
    scores: Scores
    explanations: Explanations | None


@dataclass(frozen=True)
class Sampled:
    model: StreamModel
    numbers: np.ndarray
    strings: list[list[str]]
    seed: int


@dataclass(frozen=True)
class Classified:
    streams: list[str]
    model_versions: list[str]
    posterior: np.ndarray  # (n, S)
    log_p: np.ndarray  # (n, S)

    @property
    def best(self) -> list[str]:
        return [self.streams[i] for i in np.argmax(self.posterior, axis=1).tolist()]


def deadline_from(remaining: Remaining) -> float | None:
    """A call's deadline as a time.monotonic() value; raises if it has already passed."""
    remaining_s = remaining()
    if remaining_s is None:
        return None
    if remaining_s <= 0:
        raise DeadlineExceededError("the deadline passed before the call could be scored")
    return time.monotonic() + remaining_s


def explain(terms: np.ndarray, top_k: int) -> Explanations:
    """The least probable features per point (ties keep feature order)."""
    top = np.argsort(terms, axis=1, kind="stable")[:, :top_k]
    return Explanations(terms, top, np.take_along_axis(terms, top, axis=1))


def check_priors(priors: Sequence[float], n_streams: int) -> np.ndarray | None:
    """Priors as an array (None: uniform); raises unless finite, non-negative, positive sum."""
    if not priors:
        return None
    p = np.asarray(priors, dtype=np.float64)
    if len(p) != n_streams or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
        raise InvalidArgumentError(
            f"priors must be {n_streams} finite non-negative numbers with a positive sum"
        )
    return p


class Inference:
    """The inference tasks of a running service, over its registry and batchers."""

    def __init__(
        self, registry: Registry, metrics: ServiceMetrics, settings: ServiceSettings
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._settings = settings
        self._batchers: dict[str, Batcher] = {}
        self._lock = threading.Lock()
        self._open_streams = 0

    # -- scoring ---------------------------------------------------------------------------
    def score(
        self,
        stream: str,
        points: PointsPayload,
        remaining: Remaining,
        explain_top_k: int | None = None,
    ) -> Scored:
        """log p, p-values and levels of the points; with `explain_top_k`, explanations."""
        model = self._registry.get(stream)
        batcher = self._batcher(stream)
        with batcher.arriving() as arrival:
            x = self._encode(model, points, stream)
            job = Job(model, x, deadline_from(remaining), explain=explain_top_k is not None)
            scores = batcher.score(job, arrival)
        if explain_top_k is None:
            return Scored(scores, None)
        assert scores.terms is not None  # the batch was scored with terms for this job
        top_k = min(explain_top_k or self._settings.default_top_k, len(model.feature_names))
        return Scored(scores, explain(scores.terms, top_k))

    @contextmanager
    def score_stream(self) -> Iterator[None]:
        """Admission of one ScoreStream call, within `max_concurrent_streams`."""
        limit = self._settings.max_concurrent_streams
        with self._lock:
            if self._open_streams >= limit:
                raise ResourceExhaustedError(
                    f"{self._open_streams} ScoreStream calls already open "
                    f"(limit {limit}): retry later"
                )
            self._open_streams += 1
        try:
            yield
        finally:
            with self._lock:
                self._open_streams -= 1

    def _batcher(self, stream: str) -> Batcher:
        batcher = self._batchers.get(stream)
        if batcher is None:
            s = self._settings
            with self._lock:
                batcher = self._batchers.setdefault(
                    stream,
                    Batcher(
                        self._metrics,
                        enabled=s.batching_enabled,
                        max_points=s.batch_max_points,
                        max_delay_s=s.batch_max_delay_ms / 1000.0,
                        queue_limit=s.queue_limit,
                        concurrency=s.batch_concurrency,
                    ),
                )
        return batcher

    def _encode(self, model: StreamModel, points: PointsPayload, stream: str) -> np.ndarray:
        try:
            numbers, strings = model.encoder.decode_points(
                points, stream, self._settings.max_points_per_call
            )
        except InvalidArgumentError as e:
            self._metrics.invalid(stream, e.reason)
            raise
        return model.encoder.encode(numbers, strings)

    # -- streams ---------------------------------------------------------------------------
    def streams(self) -> list[StreamStatus]:
        self._registry.check_ready()
        return self._registry.statuses()

    def stream(self, name: str) -> StreamStatus:
        return self._registry.status(name)

    # -- sampling and classification -------------------------------------------------------
    def sample(self, stream: str, n: int, seed: int | None, remaining: Remaining) -> Sampled:
        """n records drawn from the stream's model; a fresh random seed when none is given.

        The records count against the stream's queue while they are drawn, and the deadline
        is checked before each SAMPLE_STEP records, so no work is done long after it."""
        model = self._registry.get(stream)
        limit = self._settings.max_points_per_call
        if n > limit:
            raise ResourceExhaustedError(f"asked for {n} samples; the limit is {limit}")
        seed = secrets.randbits(63) if seed is None else seed
        deadline = deadline_from(remaining)
        generator = torch.Generator().manual_seed(seed)
        steps = []
        with self._batcher(stream).reserved(n), torch.inference_mode():
            for start in range(0, n, SAMPLE_STEP):
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceededError("the deadline passed while sampling")
                steps.append(model.model.sample(min(SAMPLE_STEP, n - start), generator).numpy())
        x = np.concatenate(steps) if steps else np.zeros((0, len(model.feature_names)))
        numbers, strings = model.schema.decode(x)
        return Sampled(model, numbers, strings, seed)

    def classify(
        self,
        streams: Sequence[str],
        points: PointsPayload,
        priors: Sequence[float],
        remaining: Remaining,
    ) -> Classified:
        """The posterior over candidate streams of each point, by Bayes' rule on log p."""
        names = list(streams)
        if not names or len(set(names)) != len(names):
            raise InvalidArgumentError("classify needs one or more distinct candidate streams")
        weights = check_priors(priors, len(names))
        models = [self._registry.get(s) for s in names]
        deadline_from(remaining)
        log_p = np.stack(
            [m.forward(self._encode(m, points, m.stream), terms=False)[0] for m in models],
            axis=1,
        )
        return Classified(names, [m.version for m in models], posterior(log_p, weights), log_p)
