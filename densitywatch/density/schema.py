"""The stream schema: features, their types and preprocessing, and record encoding.

A record arrives as two parts, as on the wire: the values of the number-typed features
(in schema order) and the values of the string-typed features (in schema order). `Schema.encode`
turns them into one float64 matrix in feature order, where a categorical feature holds
its vocabulary index (the vocabulary size itself meaning "unseen").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, Field, model_validator

from densitywatch.errors import EncodingError


class RawType(StrEnum):
    """How a feature travels: as a number (packed double) or as a string.

    Example:
        >>> RawType("string") is RawType.STRING
        True
    """

    NUMBER = "number"
    STRING = "string"


class FeatureKind(StrEnum):
    """How a feature is modelled.

    Example:
        >>> FeatureKind("integer"), FeatureKind.INTEGER == "integer"
        (<FeatureKind.INTEGER: 'integer'>, True)
    """

    CONTINUOUS = "continuous"  # mixture-of-Gaussians conditional, plus an optional atom
    INTEGER = "integer"  # as continuous, after uniform dequantisation of the integer lattice
    CATEGORICAL = "categorical"  # softmax over the vocabulary plus an "unseen" slot


class FeatureSpec(BaseModel):
    """One feature: its name, wire type, modelling kind and fitted preprocessing.

    Example:
        >>> FeatureSpec(name="bytes", kind=FeatureKind.INTEGER, log_transform=True).raw_type
        <RawType.NUMBER: 'number'>
        >>> from pydantic import ValidationError
        >>> try:
        ...     FeatureSpec(name="colour", kind=FeatureKind.CATEGORICAL)
        ... except ValidationError as e:
        ...     print(e.errors()[0]["msg"])
        Value error, categorical feature 'colour' needs a vocabulary
    """

    name: str
    raw_type: RawType = RawType.NUMBER
    kind: FeatureKind = FeatureKind.CONTINUOUS
    vocabulary: list[str] | list[float] | None = Field(
        default=None, description="Categorical values in index order (strings or numbers)."
    )
    log_transform: bool = Field(
        default=False, description="Apply sign(x)·log1p(|x|) before standardising."
    )
    atom: float | None = Field(
        default=None,
        description="A value this continuous feature takes with positive probability (exact "
        "zeros, a sentinel): the model gives it a probability of its own and the other "
        "values a density (a zero-inflated conditional).",
    )
    mean: float = 0.0
    std: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> FeatureSpec:
        if self.atom is not None and not (
            self.kind == FeatureKind.CONTINUOUS and math.isfinite(self.atom)
        ):
            raise ValueError(
                f"feature {self.name!r}: an atom needs a continuous kind and a finite value"
            )
        if self.kind == FeatureKind.CATEGORICAL and not self.vocabulary:
            raise ValueError(f"categorical feature {self.name!r} needs a vocabulary")
        if self.raw_type == RawType.STRING and self.kind != FeatureKind.CATEGORICAL:
            raise ValueError(f"string feature {self.name!r} must be categorical")
        if not (math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"feature {self.name!r} has a non-positive std {self.std}")
        return self


class Schema(BaseModel):
    """The ordered features of a stream.

    Example:
        >>> method = FeatureSpec(name="method", raw_type=RawType.STRING,
        ...                      kind=FeatureKind.CATEGORICAL, vocabulary=["GET", "POST"])
        >>> schema = Schema(features=[FeatureSpec(name="latency"), method])
        >>> schema.names, [f.name for f in schema.string_features]
        (['latency', 'method'], ['method'])
    """

    features: list[FeatureSpec]

    @model_validator(mode="after")
    def _unique(self) -> Schema:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        if not names:
            raise ValueError("a schema needs at least one feature")
        return self

    @property
    def names(self) -> list[str]:
        """The feature names, in schema order."""
        return [f.name for f in self.features]

    @property
    def number_features(self) -> list[FeatureSpec]:
        """The number-typed features, in schema order (the wire's numeric values)."""
        return [f for f in self.features if f.raw_type == RawType.NUMBER]

    @property
    def string_features(self) -> list[FeatureSpec]:
        """The string-typed features, in schema order (the wire's string values)."""
        return [f for f in self.features if f.raw_type == RawType.STRING]

    def encode(
        self, numbers: np.ndarray, strings: Sequence[Sequence[str]] | None = None
    ) -> np.ndarray:
        """Encode records into the model's float64 matrix (n, D), validating as it goes.

        `numbers` is (n, number of number-typed features); `strings` has one row per record
        with the string-typed features' values. Raises EncodingError naming the point index
        and the feature for a wrong width or a NaN/infinite value.

        Example:
            >>> method = FeatureSpec(name="method", raw_type=RawType.STRING,
            ...                      kind=FeatureKind.CATEGORICAL, vocabulary=["GET", "POST"])
            >>> schema = Schema(features=[FeatureSpec(name="latency"), method])
            >>> schema.encode(np.array([[0.5], [2.0]]), [["POST"], ["PUT"]])  # PUT: unseen
            array([[0.5, 1. ],
                   [2. , 2. ]])
            >>> schema.encode(np.array([[np.nan]]), [["GET"]])
            Traceback (most recent call last):
                ...
            densitywatch.errors.EncodingError: point 0: feature 'latency' is nan (must be finite)
        """
        numbers = np.asarray(numbers, dtype=np.float64)
        if numbers.ndim == 1 and len(self.number_features) == 0:
            numbers = numbers.reshape(-1, 0)
        n_num, n_str = len(self.number_features), len(self.string_features)
        if numbers.ndim != 2 or numbers.shape[1] != n_num:
            width = numbers.shape[1] if numbers.ndim == 2 else numbers.shape
            raise EncodingError(f"expected {n_num} numeric values per point, got {width}")
        n = numbers.shape[0]
        strings = strings if strings is not None else [[] for _ in range(n)]
        if n_str == 0 and len(strings) == 0:
            strings = [[] for _ in range(n)]
        if len(strings) != n:
            raise EncodingError(f"got {n} numeric rows but {len(strings)} string rows")
        _check_finite(numbers, self.number_features)
        out = np.empty((n, len(self.features)), dtype=np.float64)
        num_i = str_i = 0
        for j, feature in enumerate(self.features):
            if feature.raw_type == RawType.NUMBER:
                column = numbers[:, num_i]
                num_i += 1
                if feature.kind == FeatureKind.CATEGORICAL:
                    out[:, j] = _lookup(feature.vocabulary or [], column.tolist())
                else:
                    out[:, j] = column
            else:
                values = [_string_at(strings, i, str_i, n_str) for i in range(n)]
                str_i += 1
                out[:, j] = _lookup(feature.vocabulary or [], values)
        return out

    def decode(self, x: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
        """Inverse of `encode` for model samples: (numbers, strings).

        Example:
            >>> method = FeatureSpec(name="method", raw_type=RawType.STRING,
            ...                      kind=FeatureKind.CATEGORICAL, vocabulary=["GET", "POST"])
            >>> schema = Schema(features=[FeatureSpec(name="latency"), method])
            >>> schema.decode(np.array([[0.5, 1.0], [2.0, 0.0]]))
            (array([[0.5],
                   [2. ]]), [['POST'], ['GET']])
        """
        numbers = np.empty((x.shape[0], len(self.number_features)), dtype=np.float64)
        strings: list[list[str]] = [[] for _ in range(x.shape[0])]
        num_i = 0
        for j, feature in enumerate(self.features):
            column = x[:, j]
            if feature.kind == FeatureKind.CATEGORICAL:
                vocab = feature.vocabulary or []
                values = [vocab[int(v)] for v in column]
                if feature.raw_type == RawType.NUMBER:
                    numbers[:, num_i] = np.asarray(values, dtype=np.float64)
                else:
                    for row, value in zip(strings, values, strict=True):
                        row.append(str(value))
            else:
                numbers[:, num_i] = column
            if feature.raw_type == RawType.NUMBER:
                num_i += 1
        return numbers, strings


def _check_finite(numbers: np.ndarray, features: list[FeatureSpec]) -> None:
    bad = ~np.isfinite(numbers)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise EncodingError(
            f"point {i}: feature {features[j].name!r} is {numbers[i, j]} (must be finite)",
            index=i,
            feature=features[j].name,
        )


def _string_at(strings: Sequence[Sequence[str]], i: int, k: int, width: int) -> str:
    row = strings[i]
    if len(row) != width:
        raise EncodingError(
            f"point {i}: expected {width} categorical values, got {len(row)}", index=i
        )
    return row[k]


def _lookup(vocabulary: Sequence[str | float], values: list) -> np.ndarray:
    """Vocabulary index of each value; len(vocabulary) for an unseen value."""
    table = {v: i for i, v in enumerate(vocabulary)}
    unseen = len(vocabulary)
    return np.fromiter((table.get(v, unseen) for v in values), dtype=np.float64, count=len(values))
