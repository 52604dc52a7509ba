"""Split-conformal thresholds, levels and p-values from calibration scores (log p).

A point is an outlier at level α when its log p falls *strictly below* the k-th smallest
calibration score, k = ⌊α (n + 1)⌋. For a new point exchangeable with the calibration set,
P(outlier) = P(rank ≤ k - 1 among n + 1) ≤ k / (n + 1) ≤ α: the false-positive rate is at
most α in expectation. k ≥ 1 requires n ≥ ⌈1/α⌉ - 1 calibration points.

The conformal p-value of a score s is (1 + #{i : s_i ≤ s}) / (n + 1). The calibration keeps
the lowest `tail_size` scores exactly (so p-values below (tail_size + 1)/(n + 1), the region
that matters for alarms, are exact) and a grid of quantiles for the bulk (p-values there are
interpolated, accurate to about 1/grid).

References:
    Vovk, Gammerman, Shafer. Algorithmic Learning in a Random World. Springer, 2005.

    Lei, G'Sell, Rinaldo, Tibshirani, Wasserman. Distribution-Free Predictive Inference for
    Regression. Journal of the American Statistical Association 113(523), 2018.
    https://arxiv.org/abs/1604.04173

    Bates, Candès, Lei, Romano, Sesia. Testing for Outliers with Conformal p-values. Annals
    of Statistics 51(1), 2023. https://arxiv.org/abs/2104.08279
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from densitywatch.errors import CalibrationError

DEFAULT_LEVELS: dict[str, float] = {"warning": 0.01, "critical": 0.001}
DEFAULT_TAIL_SIZE = 10_000
QUANTILE_GRID = 1001
#: The level of a point that crosses no threshold; no calibrated level may take its name.
NORMAL = "normal"
#: Most calibration scores a calibration may claim: counts beyond it are not exact in a double.
MAX_SCORES = 2**53
_MAX_LEVEL_NAME = 64


def check_level_name(name: str) -> str:
    """`name` if it can name a level; ValueError otherwise (`normal` is reserved).

    Example:
        >>> check_level_name("warning")
        'warning'
        >>> check_level_name("normal")
        Traceback (most recent call last):
            ...
        ValueError: the level name 'normal' is reserved for points below every level
    """
    if name == NORMAL:
        raise ValueError(f"the level name {NORMAL!r} is reserved for points below every level")
    if not name or len(name) > _MAX_LEVEL_NAME or not name.isprintable():
        raise ValueError(
            f"a level name needs 1 to {_MAX_LEVEL_NAME} printable characters, got {name[:80]!r}"
        )
    return name


def _finite_ascending(values: list[float], what: str) -> list[float]:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite")
    if any(b < a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{what} must be in ascending order")
    return values


class Level(BaseModel):
    """One alarm level: a name, its target false-positive rate and the log p threshold.

    Example:
        >>> calibrate(-np.arange(1.0, 1001.0), {"warning": 0.01}).levels[0]
        Level(name='warning', target_fpr=0.01, threshold=-991.0, rank=10)
    """

    name: str
    target_fpr: float = Field(gt=0, lt=1)
    threshold: float = Field(allow_inf_nan=False)
    rank: int = Field(ge=1, description="k: the threshold is the k-th smallest calibration score.")

    _name = field_validator("name")(check_level_name)


class Calibration(BaseModel):
    """What the service needs to turn a log p into a decision and a p-value.

    Example:
        >>> cal = calibrate(-np.arange(1.0, 1001.0), {"warning": 0.01, "critical": 0.002})
        >>> cal.n_scores, [(lv.name, lv.threshold) for lv in cal.levels]
        (1000, [('warning', -991.0), ('critical', -999.0)])
    """

    levels: list[Level]
    n_scores: int = Field(ge=1, le=MAX_SCORES)
    tail: list[float] = Field(description="The lowest scores, ascending (exact p-values).")
    quantiles: list[float] = Field(
        min_length=2, description="Score quantiles on an even grid over [0, 1]."
    )
    trim_fraction: float = Field(default=0.0, ge=0, lt=1)
    n_trimmed: int = Field(default=0, ge=0, le=MAX_SCORES)
    data_fingerprint: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("tail")
    @classmethod
    def _tail(cls, tail: list[float]) -> list[float]:
        return _finite_ascending(tail, "tail scores")

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, quantiles: list[float]) -> list[float]:
        return _finite_ascending(quantiles, "quantiles")

    @model_validator(mode="after")
    def _consistent(self) -> Calibration:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        if len(self.tail) > self.n_scores:
            raise ValueError(f"{len(self.tail)} tail scores but n_scores={self.n_scores}")
        if any(level.rank > self.n_scores for level in self.levels):
            raise ValueError("a level's rank exceeds n_scores")
        return self

    def level_of(self, log_p: float) -> str | None:
        """The most severe level whose threshold the score falls below (None: normal).

        Example:
            >>> cal = calibrate(-np.arange(1.0, 1001.0), {"warning": 0.01, "critical": 0.002})
            >>> cal.level_of(-995.0), cal.level_of(-999.5), cal.level_of(-991.0)
            ('warning', 'critical', None)
        """
        crossed = [lv for lv in self.levels if log_p < lv.threshold]
        return min(crossed, key=lambda lv: lv.target_fpr).name if crossed else None

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """Conformal p-values of scores (exact in the stored tail).

        Example:
            >>> cal = calibrate(-np.arange(1.0, 1001.0), {"warning": 0.01})
            >>> cal.p_values(np.array([-1000.5, -995.0, 0.0])).round(4)  # (1 + count) / 1001
            array([0.001, 0.007, 1.   ])
        """
        return conformal_p_values(
            np.asarray(scores, dtype=np.float64),
            np.asarray(self.tail, dtype=np.float64),
            np.asarray(self.quantiles, dtype=np.float64),
            self.n_scores,
        )


def quantile_grid(n_quantiles: int) -> np.ndarray:
    """The probability of each stored quantile: an even grid over [0, 1].

    Example:
        >>> quantile_grid(5)
        array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    return np.linspace(0.0, 1.0, n_quantiles)


def conformal_p_values(
    scores: np.ndarray,
    tail: np.ndarray,
    quantiles: np.ndarray,
    n: int,
    grid: np.ndarray | None = None,
) -> np.ndarray:
    """(1 + #calibration scores <= s) / (n + 1): counted exactly in `tail` (the lowest
    scores, ascending), interpolated on the even `quantiles` grid beyond it.

    `grid`: `quantile_grid(len(quantiles))`, for callers that keep it rather than rebuild it
    per call.

    Example:
        >>> s = np.arange(1.0, 101.0)  # n = 100 calibration scores
        >>> tail, quantiles = s[:3], np.quantile(s, quantile_grid(5))
        >>> conformal_p_values(np.array([0.0, 2.5, 50.5]), tail, quantiles, n=100).round(3)
        array([0.01 , 0.03 , 0.505])

    References:
        Bates, Candès, Lei, Romano, Sesia. Testing for Outliers with Conformal p-values.
        Annals of Statistics 51(1), 2023. https://arxiv.org/abs/2104.08279
    """
    counts = np.searchsorted(tail, scores, side="right")
    n_tail = len(tail)
    if n_tail < n:
        beyond = counts >= n_tail
        if beyond.any():
            grid = quantile_grid(len(quantiles)) if grid is None else grid
            frac = _interp_many(scores[beyond], quantiles, grid)
            counts[beyond] = np.maximum(n_tail, np.round(frac * n))
    return (counts + 1.0) / (n + 1.0)


def conformal_p_value(
    score: float,
    tail: Sequence[float],
    quantiles: Sequence[float],
    n: int,
    grid: Sequence[float],
) -> float:
    """`conformal_p_values` of one score in plain Python floats, equal bit for bit (the
    service scores single points: there each numpy call costs more than its arithmetic).

    `tail`, `quantiles` ascending; `grid`: `quantile_grid(len(quantiles))` as a list.

    Example:
        >>> s = np.arange(1.0, 101.0)
        >>> tail, quantiles, grid = s[:3], np.quantile(s, quantile_grid(5)), quantile_grid(5)
        >>> p = conformal_p_value(50.5, tail.tolist(), quantiles.tolist(), 100, grid.tolist())
        >>> p, bool(p == conformal_p_values(np.array([50.5]), tail, quantiles, 100)[0])
        (0.504950495049505, True)
    """
    count = bisect_right(tail, score)
    n_tail = len(tail)
    if n_tail < n and count >= n_tail:
        count = max(n_tail, round(_interp(score, quantiles, grid) * n))
    return (count + 1.0) / (n + 1.0)


def _interp_many(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation, clamped at the ends, like np.interp; but as
    fp[j] + t·(fp[j+1] − fp[j]) with t = (x − xp[j]) / (xp[j+1] − xp[j]) in [0, 1): knots a
    subnormal distance apart overflow np.interp's slope (it returns inf there), not t."""
    j = np.searchsorted(xp, x, side="right") - 1
    inside = (j >= 0) & (x < xp[-1])
    out = np.where(j < 0, fp[0], fp[-1]).astype(np.float64)
    ji = j[inside]
    t = (x[inside] - xp[ji]) / (xp[ji + 1] - xp[ji])  # xp[j] <= x < xp[j+1]: no zero division
    out[inside] = t * (fp[ji + 1] - fp[ji]) + fp[ji]
    return out


def _interp(x: float, xp: Sequence[float], fp: Sequence[float]) -> float:
    """`_interp_many` at one point, in plain floats (same clamping, same arithmetic)."""
    if x >= xp[-1]:
        return fp[-1]
    j = bisect_right(xp, x) - 1
    if j < 0:
        return fp[0]
    t = (x - xp[j]) / (xp[j + 1] - xp[j])
    return t * (fp[j + 1] - fp[j]) + fp[j]


def min_scores_for(fpr: float) -> int:
    """Smallest calibration set that supports a level at this false-positive rate.

    Example:
        >>> min_scores_for(0.01), min_scores_for(0.001)
        (99, 999)
    """
    return max(math.ceil(1.0 / fpr - 1e-9) - 1, 1)


def conformal_rank(fpr: float, n: int) -> int:
    """k = ⌊α (n + 1)⌋, the rank of the threshold among n sorted scores.

    Example:
        >>> conformal_rank(0.01, 99), conformal_rank(0.01, 1000)
        (1, 10)

    References:
        Lei, G'Sell, Rinaldo, Tibshirani, Wasserman. Distribution-Free Predictive Inference
        for Regression. Journal of the American Statistical Association 113(523), 2018.
        https://arxiv.org/abs/1604.04173
    """
    return math.floor(fpr * (n + 1) + 1e-9)


def calibrate(
    scores: np.ndarray,
    levels: dict[str, float] | None = None,
    *,
    trim_fraction: float = 0.0,
    tail_size: int = DEFAULT_TAIL_SIZE,
    data_fingerprint: str = "",
) -> Calibration:
    """Thresholds per level from calibration log p scores (higher = more normal).

    `trim_fraction` drops that fraction of the lowest scores first (robust option for
    calibration data that may hold anomalies); the guarantee then holds for the trimmed
    distribution, so the realised FPR on clean data can exceed the target by up to the
    trimmed fraction (see README).

    Example:
        >>> scores = -np.arange(1.0, 1001.0)  # log p of 1000 clean points: -1, ..., -1000
        >>> level = calibrate(scores, {"warning": 0.01}).levels[0]
        >>> level.rank, level.threshold  # k = ⌊0.01 · 1001⌋ = 10: the 10th smallest score
        (10, -991.0)
        >>> calibrate(scores[:50], {"critical": 0.001})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        densitywatch.errors.CalibrationError: level 'critical' (fpr 0.001) needs at least 999 ...

    References:
        Vovk, Gammerman, Shafer. Algorithmic Learning in a Random World. Springer, 2005.

        Lei, G'Sell, Rinaldo, Tibshirani, Wasserman. Distribution-Free Predictive Inference for
        Regression. Journal of the American Statistical Association 113(523), 2018.
        https://arxiv.org/abs/1604.04173

        Bates, Candès, Lei, Romano, Sesia. Testing for Outliers with Conformal p-values. Annals
        of Statistics 51(1), 2023. https://arxiv.org/abs/2104.08279
    """
    levels = dict(DEFAULT_LEVELS if levels is None else levels)
    for name in levels:
        try:
            check_level_name(name)
        except ValueError as e:
            raise CalibrationError(str(e)) from None
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if not np.isfinite(s).all():
        raise CalibrationError("calibration scores contain NaN or infinite values")
    if not 0 <= trim_fraction < 1:
        raise CalibrationError(f"trim_fraction must be in [0, 1), got {trim_fraction}")
    n_trim = math.floor(trim_fraction * len(s))
    s = s[n_trim:]
    n = len(s)
    if n == 0:
        raise CalibrationError("no calibration scores (after trimming): supply clean data")
    out = []
    for name, fpr in sorted(levels.items(), key=lambda kv: -kv[1]):
        need = min_scores_for(fpr)
        if n < need:
            raise CalibrationError(
                f"level {name!r} (fpr {fpr:g}) needs at least {need} calibration points "
                f"after trimming; got {n}. Supply more clean data or a larger fpr."
            )
        k = conformal_rank(fpr, n)
        out.append(Level(name=name, target_fpr=fpr, threshold=float(s[k - 1]), rank=k))
    quantiles = np.quantile(s, quantile_grid(QUANTILE_GRID))
    return Calibration(
        levels=out,
        n_scores=n,
        tail=s[:tail_size].tolist(),
        quantiles=quantiles.tolist(),
        trim_fraction=trim_fraction,
        n_trimmed=n_trim,
        data_fingerprint=data_fingerprint,
    )
