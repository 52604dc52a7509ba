"""Wire <-> numpy: request points to encoded matrices (precomputed per-stream encoders),
scores to responses, manifests to StreamInfo. No per-point Python loops for numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.density.artifact import Manifest
from densitywatch.density.schema import FeatureKind, RawType, Schema
from densitywatch.errors import InvalidArgumentError, ResourceExhaustedError

# Up to this many numbers a request is decoded with Python floats: on caches a forward pass
# has just evicted, each numpy call costs ~10 µs, more than the whole Python path.
SMALL_DECODE = 64


class PointsPayload(Protocol):
    """Points in the API's layout: row-major numbers, row-major strings, and their count."""

    @property
    def numbers(self) -> Sequence[float]: ...

    @property
    def strings(self) -> Sequence[str]: ...

    @property
    def count(self) -> int: ...


class PointEncoder:
    """Schema.encode, precomputed for one schema: vocabulary tables built once, numeric
    columns copied with one fancy-index, numeric vocabularies matched by searchsorted."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.n_features = len(schema.features)
        self.number_names = [f.name for f in schema.number_features]
        self.string_names = [f.name for f in schema.string_features]
        self.n_num, self.n_str = len(self.number_names), len(self.string_names)
        plain_out, plain_in = [], []
        self._num_cat: list[tuple[int, int, np.ndarray, np.ndarray, int]] = []
        self._num_cat_dict: list[tuple[int, int, dict[object, int], int]] = []
        self._str_cat: list[tuple[int, int, dict[str, int], int]] = []
        num_i = str_i = 0
        for j, f in enumerate(schema.features):
            vocab = list(f.vocabulary or [])
            if f.raw_type == RawType.NUMBER:
                if f.kind != FeatureKind.CATEGORICAL:
                    plain_out.append(j)
                    plain_in.append(num_i)
                elif all(isinstance(v, int | float) for v in vocab):
                    values = np.asarray(vocab, dtype=np.float64)
                    order = np.argsort(values, kind="stable")
                    self._num_cat.append((j, num_i, values[order], order, len(vocab)))
                else:
                    table = {v: i for i, v in enumerate(vocab)}
                    self._num_cat_dict.append((j, num_i, table, len(vocab)))
                num_i += 1
            else:
                table_s: dict[str, int] = {str(v): i for i, v in enumerate(vocab)}
                self._str_cat.append((j, str_i, table_s, len(vocab)))
                str_i += 1
        self._plain_out = np.asarray(plain_out, dtype=np.intp)
        self._plain_in = np.asarray(plain_in, dtype=np.intp)
        # Every feature a plain number, in the wire's order: the numbers are the encoding.
        self._identity = plain_out == plain_in == list(range(self.n_features))

    def encode(self, numbers: np.ndarray, strings: Sequence[str]) -> np.ndarray:
        """numbers (n, n_num) finite float64, strings flat row-major (n * n_str) -> (n, D)
        (`numbers` itself when every feature is a plain number)."""
        if self._identity:
            return numbers
        n = numbers.shape[0]
        out = np.empty((n, self.n_features), dtype=np.float64)
        if len(self._plain_out):
            out[:, self._plain_out] = numbers[:, self._plain_in]
        for j, k, sorted_vocab, order, unseen in self._num_cat:
            column = numbers[:, k]
            pos = np.minimum(np.searchsorted(sorted_vocab, column), len(sorted_vocab) - 1)
            hit = sorted_vocab[pos] == column
            out[:, j] = np.where(hit, order[pos], unseen)
        for j, k, table, unseen in self._num_cat_dict:
            values = numbers[:, k].tolist()
            out[:, j] = np.fromiter((table.get(v, unseen) for v in values), np.float64, n)
        step = self.n_str
        for j, k, table_s, unseen in self._str_cat:
            values_s = strings[k::step] if step > 1 else strings
            out[:, j] = np.fromiter((table_s.get(v, unseen) for v in values_s), np.float64, n)
        return out

    def decode_points(
        self, points: PointsPayload, stream: str, max_points: int
    ) -> tuple[np.ndarray, Sequence[str]]:
        """Validate a Points message's shape and values -> (numbers (n, n_num), flat strings)."""
        n_numbers, n_strings = len(points.numbers), len(points.strings)
        claimed = points.count or _infer_count(n_numbers, self.n_num, n_strings, self.n_str)
        if claimed > max_points:
            raise ResourceExhaustedError(
                f"{claimed} points in one call; the limit is {max_points}: split the batch"
            )
        n = self._count(points.count, n_numbers, n_strings, stream)
        if n_numbers <= SMALL_DECODE:
            values = points.numbers[:]
            # A non-finite value makes the sum non-finite (finite values rarely overflow it).
            finite = math.isfinite(sum(values))
            numbers = np.array(values, dtype=np.float64).reshape(n, self.n_num)
        else:
            numbers = np.array(points.numbers, dtype=np.float64).reshape(n, self.n_num)
            finite = bool(np.isfinite(numbers).all())
        if not finite:
            self._check_finite(numbers, stream)
        return numbers, points.strings

    def _check_finite(self, numbers: np.ndarray, stream: str) -> None:
        """Raise naming the first non-finite value's point and feature, if there is one."""
        bad = np.argwhere(~np.isfinite(numbers))
        if len(bad):
            i, k = (int(v) for v in bad[0])
            raise InvalidArgumentError(
                f"stream {stream!r}: point {i}: feature {self.number_names[k]!r} is "
                f"{numbers[i, k]} (must be finite)",
                index=i,
                feature=self.number_names[k],
                reason="non_finite",
            )

    def _count(self, count: int, n_numbers: int, n_strings: int, stream: str) -> int:
        n = count or _infer_count(n_numbers, self.n_num, n_strings, self.n_str)
        for got, width, names, what, reason in (
            (n_numbers, self.n_num, self.number_names, "numbers", "width"),
            (n_strings, self.n_str, self.string_names, "strings", "type"),
        ):
            if got != n * width:
                raise _width_error(stream, n, got, width, names, what, reason)
        return n


def _infer_count(n_numbers: int, n_num: int, n_strings: int, n_str: int) -> int:
    if n_num:
        return -(-n_numbers // n_num)
    return -(-n_strings // n_str) if n_str else 0


def _width_error(
    stream: str, n: int, got: int, width: int, names: list[str], what: str, reason: str
) -> InvalidArgumentError:
    expected = n * width
    if width == 0:
        return InvalidArgumentError(
            f"stream {stream!r} has no {'number' if what == 'numbers' else 'string'}-typed "
            f"features, but {got} {what} were sent",
            index=0,
            reason="type",
        )
    index = min(got, expected) // width
    feature = names[min(got, expected) % width]
    return InvalidArgumentError(
        f"stream {stream!r}: point {index}: feature {feature!r} "
        f"{'is missing' if got < expected else 'is beyond the last point'}: got {got} "
        f"{what} for {n} points of {width} ({', '.join(names)})",
        index=index,
        feature=feature,
        reason=reason,
    )


def points_message(numbers: np.ndarray, strings: Sequence[Sequence[str]]) -> pb.Points:
    """Records (numbers (n, n_num), strings rows) -> Points."""
    flat = [s for row in strings for s in row]
    return pb.Points(numbers=numbers.ravel().tolist(), strings=flat, count=len(numbers))


def _timestamp(value: object) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)  # type: ignore[arg-type]
    return ts


def features_message(schema: Schema) -> list[pb.Feature]:
    return [
        pb.Feature(
            name=f.name,
            raw_type=f.raw_type.value,
            kind=f.kind.value,
            vocabulary=[v if isinstance(v, str) else repr(v) for v in (f.vocabulary or [])],
        )
        for f in schema.features
    ]


def stream_info(manifest: Manifest) -> pb.StreamInfo:
    """StreamInfo of a serving version."""
    t = manifest.training
    info = pb.StreamInfo(
        name=manifest.stream,
        state=pb.STREAM_STATE_SERVING,
        model_version=manifest.version,
        parent_version=manifest.parent_version or "",
        created_at=_timestamp(manifest.created_at),
        features=features_message(manifest.feature_schema),
        training=pb.TrainingMetrics(
            train_nll=t.train_nll,
            val_nll=t.val_nll,
            n_train=t.n_train,
            n_val=t.n_val,
            epochs=t.epochs,
            duration_s=t.duration_s,
            data_fingerprint=t.data_fingerprint,
            source=t.source,
        ),
        package_version=manifest.package_version,
    )
    if manifest.calibration is not None:
        c = manifest.calibration
        info.levels.extend(
            pb.Level(name=lv.name, target_fpr=lv.target_fpr, threshold=lv.threshold)
            for lv in c.levels
        )
        info.calibrated_at.CopyFrom(_timestamp(c.created_at))
        info.n_calibration_scores = c.n_scores
    return info
