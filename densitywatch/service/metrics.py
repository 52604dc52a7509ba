"""Prometheus metrics (names are a contract with deploy/ alerts and dashboards).

Per-stream label children are bound once when a model is loaded (`ServiceMetrics.bind`), so
the hot path only calls `.inc(n)` per batch. The log p histogram is a custom collector
updated with one vectorised bucket count per batch rather than one `observe` per point.
Streams beyond `max_streams` share the label `other`.
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from densitywatch.density.calibration import Calibration

OTHER = "other"
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


def log_prob_buckets(calibration: Calibration) -> np.ndarray:
    """Bucket bounds around a stream's thresholds and calibration quantiles."""
    thresholds = [lv.threshold for lv in calibration.levels]
    q = np.asarray(calibration.quantiles or [0.0])
    spread = float(q[-1] - q[0]) or 1.0
    anchors = [*thresholds, *np.quantile(q, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist()]
    low, high = min(anchors) - spread, float(q[-1]) + 0.1 * spread
    grid = np.linspace(low, high, 12).tolist()
    return np.unique(np.round(np.asarray([*grid, *anchors]), 6))


class _VectorHistogram:
    """One histogram child: bucket counts kept in numpy, updated per batch (single points
    are counted in a Python list beside them: no numpy call per point)."""

    def __init__(self, bounds: np.ndarray) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._bounds = self.bounds.tolist()
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: +Inf
        self.single_counts = [0] * len(self.counts)
        self.total = 0.0
        self.lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        idx = np.searchsorted(self.bounds, values, side="left")  # le semantics
        binned = np.bincount(idx, minlength=len(self.counts))
        total = float(values.sum())
        with self.lock:
            self.counts += binned
            self.total += total

    def observe(self, value: float) -> None:
        """`observe_many` of one value, without numpy calls (the single-point hot path)."""
        idx = bisect_left(self._bounds, value)
        with self.lock:
            self.single_counts[idx] += 1
            self.total += value

    def snapshot(self) -> tuple[list[int], float]:
        """Cumulative bucket counts (the last is +Inf, the count) and the sum."""
        with self.lock:
            counts = self.counts + np.asarray(self.single_counts, dtype=np.int64)
            total = self.total
        return np.cumsum(counts).tolist(), total


class LogProbHistograms(Collector):
    """`densitywatch_log_prob{stream}` with per-stream buckets."""

    name = "densitywatch_log_prob"

    def __init__(self) -> None:
        self._children: dict[str, _VectorHistogram] = {}
        self._lock = threading.Lock()

    def child(self, stream: str, bounds: np.ndarray) -> _VectorHistogram:
        with self._lock:
            existing = self._children.get(stream)
            if existing is None or (
                stream != OTHER and not np.array_equal(existing.bounds, bounds)
            ):
                existing = self._children[stream] = _VectorHistogram(bounds)
            return existing

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, "log p(x) of scored points", labels=["stream"])
        with self._lock:
            children = dict(self._children)
        for stream, h in sorted(children.items()):
            cumulative, total = h.snapshot()
            buckets = [(_fmt(b), c) for b, c in zip(h.bounds.tolist(), cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            family.add_metric([stream], buckets, None)
            # add_metric drops _count/_sum when a bucket bound is negative (log p always is);
            # they are exact here, and rate(_count) is what dashboards use.
            labels = {"stream": stream}
            family.samples.append(Sample(f"{self.name}_count", labels, cumulative[-1]))
            family.samples.append(Sample(f"{self.name}_sum", labels, total))
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, "log p(x) of scored points", labels=["stream"])


def _fmt(value: float) -> str:
    return repr(float(value))


@dataclass
class StreamMetrics:
    """Label children of one stream, bound at load so scoring only increments."""

    label: str
    points: Counter
    outliers: list[Counter]  # one per level, in the calibration's level order
    log_prob: _VectorHistogram
    invalid: dict[str, Counter]

    def record_batch(self, log_p: np.ndarray, outliers: Sequence[int]) -> None:
        """`outliers`: points below each level's threshold, in the calibration's level order."""
        self.points.inc(len(log_p))
        for counter, count in zip(self.outliers, outliers, strict=True):
            if count:
                counter.inc(count)
        self.log_prob.observe_many(log_p)

    def record_one(self, log_p: float, crossed: Sequence[bool]) -> None:
        """`record_batch` of one point: `crossed` per level, in the calibration's order."""
        self.points.inc()
        for counter, hit in zip(self.outliers, crossed, strict=True):
            if hit:
                counter.inc()
        self.log_prob.observe(log_p)


INVALID_REASONS = ("width", "non_finite", "type", "count")


class ServiceMetrics:
    """All service metrics, in their own registry (tests run several servers per process)."""

    def __init__(self, max_streams: int, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.max_streams = max_streams
        self._labels: dict[str, str] = {}
        self._lock = threading.Lock()
        r = self.registry
        self.points_scored = Counter(
            "densitywatch_points_scored", "Points scored", ["stream"], registry=r
        )
        self.outliers = Counter(
            "densitywatch_outliers",
            "Points below a level's threshold (counted at every level crossed)",
            ["stream", "level"],
            registry=r,
        )
        self.expected_outlier_rate = Gauge(
            "densitywatch_expected_outlier_rate",
            "Target false-positive rate of the level",
            ["stream", "level"],
            registry=r,
        )
        self.threshold = Gauge(
            "densitywatch_threshold",
            "log p threshold of the level",
            ["stream", "level"],
            registry=r,
        )
        self.request_duration = Histogram(
            "densitywatch_request_duration_seconds",
            "gRPC call duration",
            ["method", "code"],
            buckets=REQUEST_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "densitywatch_batch_size", "Points per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(
            "densitywatch_queue_depth", "Points waiting for a forward pass", registry=r
        )
        # Read at scrape time from the batchers rather than updated twice per request.
        self._queues: list[Callable[[], int]] = []
        self.queue_depth.set_function(lambda: float(sum(queued() for queued in self._queues)))
        self.model_info = Gauge(
            "densitywatch_model_info",
            "1 for the serving version",
            ["stream", "version"],
            registry=r,
        )
        self.calibration_timestamp = Gauge(
            "densitywatch_calibration_timestamp_seconds",
            "When the serving calibration was made (unix seconds)",
            ["stream"],
            registry=r,
        )
        self.load_failures = Counter(
            "densitywatch_model_load_failures",
            "Model versions that failed to load",
            ["stream"],
            registry=r,
        )
        self.invalid_points = Counter(
            "densitywatch_invalid_points", "Rejected input", ["stream", "reason"], registry=r
        )
        self._durations: dict[tuple[str, str], Any] = {}
        self.log_prob = LogProbHistograms()
        r.register(self.log_prob)
        self._serving_version: dict[str, str] = {}

    def track_queue(self, queued: Callable[[], int]) -> None:
        """Count `queued()` points in densitywatch_queue_depth."""
        with self._lock:
            self._queues = [*self._queues, queued]

    def label(self, stream: str) -> str:
        """The stream's label value: its name for the first `max_streams` streams, else other."""
        with self._lock:
            label = self._labels.get(stream)
            if label is None:
                named = sum(1 for v in self._labels.values() if v != OTHER)
                label = stream if named < self.max_streams else OTHER
                self._labels[stream] = label
            return label

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        child = self._durations.get((method, code))
        if child is None:  # methods x status codes: a bounded set, bound once each
            child = self._durations[(method, code)] = self.request_duration.labels(method, code)
        child.observe(seconds)

    def load_failed(self, stream: str) -> None:
        self.load_failures.labels(self.label(stream)).inc()

    def invalid(self, stream: str, reason: str, n: int = 1) -> None:
        self.invalid_points.labels(self.label(stream), reason).inc(n)

    def bind(self, stream: str, version: str, calibration: Calibration) -> StreamMetrics:
        """Bind a newly loaded version's children and set its gauges."""
        label = self.label(stream)
        level_names = [lv.name for lv in calibration.levels]
        if label != OTHER:
            self._set_gauges(stream, version, calibration)
        return StreamMetrics(
            label=label,
            points=self.points_scored.labels(label),
            outliers=[self.outliers.labels(label, name) for name in level_names],
            log_prob=self.log_prob.child(label, log_prob_buckets(calibration)),
            invalid={r: self.invalid_points.labels(label, r) for r in INVALID_REASONS},
        )

    def _set_gauges(self, stream: str, version: str, calibration: Calibration) -> None:
        for lv in calibration.levels:
            self.expected_outlier_rate.labels(stream, lv.name).set(lv.target_fpr)
            self.threshold.labels(stream, lv.name).set(lv.threshold)
        self.calibration_timestamp.labels(stream).set(calibration.created_at.timestamp())
        with self._lock:
            old = self._serving_version.get(stream)
            self._serving_version[stream] = version
        if old is not None and old != version:
            with contextlib.suppress(KeyError):
                self.model_info.remove(stream, old)
        self.model_info.labels(stream, version).set(1)


def level_names(calibration: Calibration) -> Sequence[str]:
    return [lv.name for lv in calibration.levels]
