"""Schema inference: decide each column's kind from the data, fit its preprocessing.

Rules (documented in docs/model.md):
- a column of strings is categorical; its vocabulary is its values by descending frequency,
  capped at `max_vocabulary` (rarer values score as "unseen");
- a numeric column with at most `max_categorical_values` distinct values is categorical
  (its values become the vocabulary), so lattice points cannot make log p blow up;
- a numeric column whose values are all integers is `integer` (uniformly dequantised);
- otherwise it is `continuous`; its most frequent value is its atom (a probability of its
  own, not a density spike) when it holds at least `atom_fraction` of the rows (5%);
- a non-negative column whose skewness exceeds `log_skew` gets the transform sign(x)·log1p(|x|)
  when that reduces the skewness;
- every numeric non-categorical column is standardised (mean, std after the transform, over
  the values off the atom).
An all-missing column, or a constant one, is an error naming the column (declare it
categorical in the config to keep a constant column as a one-value category).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, Field

from densitywatch.density.schema import FeatureKind, FeatureSpec, RawType, Schema
from densitywatch.errors import SchemaError
from densitywatch.training.data import CellOrigin, first_text_cell, text_origins


class InferenceOptions(BaseModel):
    """Knobs of schema inference."""

    max_categorical_values: int = Field(
        default=10,
        ge=1,
        description="Numeric columns with at most this many values are categorical.",
    )
    max_vocabulary: int = Field(default=256, ge=1, description="Largest categorical vocabulary.")
    log_skew: float = Field(
        default=2.0, description="Skewness above which a log transform is tried."
    )
    atom_fraction: float | None = Field(
        default=0.05,
        gt=0,
        le=1,
        description="A continuous column's most frequent value is an atom when it holds at "
        "least this share of the rows; None: no atoms.",
    )
    atom_isolation: float | None = Field(
        default=None,
        ge=1,
        description="An atom must also hold at least this many times the rows of the "
        "column's next most frequent value (a point mass, such as exact zeros among distinct "
        "values, rather than the mode of a lattice); None: no such condition.",
    )
    constant: str = Field(
        default="error", description="Constant columns: 'error' or 'categorical' (one value)."
    )


def _skew(x: np.ndarray) -> float:
    std = x.std()
    return float(((x - x.mean()) ** 3).mean() / std**3) if std > 0 else 0.0


def _is_string_column(values: np.ndarray) -> bool:
    return values.dtype.kind in "OUS"


def infer_feature(
    name: str,
    values: np.ndarray,
    options: InferenceOptions,
    kind: FeatureKind | None = None,
    origin: CellOrigin | None = None,
) -> FeatureSpec:
    """Infer one feature's spec from its (non-missing) training values.

    `origin`: where the column's first non-numeric cell is in its file, if known."""
    if len(values) == 0:
        raise SchemaError(f"column {name!r} has no non-missing values")
    if _is_string_column(values):
        if kind not in (None, FeatureKind.CATEGORICAL):
            cell = origin or first_text_cell(values)
            where = cell.not_a_number(name) if cell else f"column {name!r} holds strings"
            raise SchemaError(f"{where} (the column is declared {kind.value})")
        return _categorical(name, [str(v) for v in values], RawType.STRING, options)
    x = values.astype(np.float64)
    if not np.isfinite(x).all():
        raise SchemaError(f"column {name!r} has infinite values")
    distinct = np.unique(x)
    if kind == FeatureKind.CATEGORICAL or (
        kind is None and len(distinct) == 1 and options.constant == "categorical"
    ):
        return _categorical(name, x.tolist(), RawType.NUMBER, options)
    if len(distinct) == 1:
        raise SchemaError(
            f"column {name!r} is constant ({distinct[0]:g}); drop it or declare it categorical"
        )
    if kind is None:
        if len(distinct) <= options.max_categorical_values:
            return _categorical(name, x.tolist(), RawType.NUMBER, options)
        kind = (
            FeatureKind.INTEGER
            if np.all(distinct == np.round(distinct))
            else FeatureKind.CONTINUOUS
        )
    return _numeric(name, x, kind, options)


def _categorical(
    name: str, values: list, raw_type: RawType, options: InferenceOptions
) -> FeatureSpec:
    counts = Counter(values)
    vocabulary = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]
    return FeatureSpec(
        name=name,
        raw_type=raw_type,
        kind=FeatureKind.CATEGORICAL,
        vocabulary=vocabulary[: options.max_vocabulary],
    )


def _atom(x: np.ndarray, options: InferenceOptions) -> float | None:
    """The most frequent value of a continuous column, if it is frequent enough to be an
    atom and leaves at least two other distinct values for the density."""
    if options.atom_fraction is None:
        return None
    values, counts = np.unique(x, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] < options.atom_fraction * len(x) or len(values) < 3:
        return None
    if options.atom_isolation is not None:
        second = np.partition(counts, -2)[-2]
        if counts[top] < options.atom_isolation * second:
            return None
    return float(values[top])


def _numeric(name: str, x: np.ndarray, kind: FeatureKind, options: InferenceOptions) -> FeatureSpec:
    atom = _atom(x, options) if kind == FeatureKind.CONTINUOUS else None
    if atom is not None:
        x = x[x != atom]
    y = x + 0.5 if kind == FeatureKind.INTEGER else x
    log = False
    if y.min() >= 0 and _skew(y) > options.log_skew:
        ly = np.log1p(y)
        if abs(_skew(ly)) < abs(_skew(y)):
            log, y = True, ly
    std = float(y.std())
    if kind == FeatureKind.INTEGER:
        std = max(std, 0.5)  # the dequantisation noise alone has std ~0.29
    return FeatureSpec(
        name=name,
        kind=kind,
        log_transform=log,
        atom=atom,
        mean=float(y.mean()),
        std=max(std, 1e-6),
    )


def infer_schema(
    columns: Mapping[str, np.ndarray],
    overrides: Mapping[str, FeatureKind] | None = None,
    options: InferenceOptions | None = None,
) -> Schema:
    """A schema for named columns (in the mapping's order), with per-column kind overrides.

    A text column declared continuous or integer is an error naming its first non-numeric
    cell (file and line when `columns` is a `training.data.Table` from `read_table`)."""
    options = options or InferenceOptions()
    overrides = overrides or {}
    unknown = set(overrides) - set(columns)
    if unknown:
        raise SchemaError(f"type overrides name unknown columns: {sorted(unknown)}")
    origins = text_origins(columns)
    features = [
        infer_feature(name, values, options, overrides.get(name), origins.get(name))
        for name, values in columns.items()
    ]
    return Schema(features=features)


def infer_schema_from_matrix(
    x: np.ndarray, names: list[str] | None = None, options: InferenceOptions | None = None
) -> Schema:
    """Convenience for an all-numeric matrix (n, d)."""
    names = names or [f"x{j}" for j in range(x.shape[1])]
    return infer_schema({n: x[:, j] for j, n in enumerate(names)}, options=options)
