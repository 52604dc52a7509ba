"""Split-conformal thresholds and p-values against the exact order statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from densitywatch.density.calibration import (
    QUANTILE_GRID,
    Calibration,
    CalibrationError,
    calibrate,
    conformal_p_value,
    conformal_p_values,
    conformal_rank,
    min_scores_for,
    quantile_grid,
)

# Scores with many ties (small integers) or spread-out floats.
tied = st.lists(st.integers(-5, 5).map(float), min_size=1, max_size=300)
spread = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300
)
scores_st = st.one_of(tied, spread)
fprs = st.floats(0.001, 0.5)


def exact_p(scores: np.ndarray, s: float) -> float:
    return (1 + int(np.sum(scores <= s))) / (len(scores) + 1)


@given(scores=scores_st, fpr=fprs)
def test_threshold_is_the_kth_smallest_score(scores: list[float], fpr: float) -> None:
    s = np.sort(np.asarray(scores))
    n = len(s)
    k = math.floor(fpr * (n + 1) + 1e-9)
    if k < 1:
        with pytest.raises(CalibrationError, match=f"at least {min_scores_for(fpr)}"):
            calibrate(s, {"only": fpr})
        return
    (level,) = calibrate(np.random.default_rng(0).permutation(s), {"only": fpr}).levels
    assert level.rank == k
    assert level.threshold == s[k - 1]
    # Strictly below the k-th smallest: at most k - 1 ≤ fpr·(n + 1) - 1 calibration points.
    assert np.sum(s < level.threshold) <= k - 1


@given(scores=scores_st, queries=st.lists(st.floats(-2e6, 2e6), min_size=1, max_size=20))
def test_p_values_exact_when_the_tail_holds_everything(
    scores: list[float], queries: list[float]
) -> None:
    s = np.asarray(scores)
    cal = calibrate(s, {"lax": 0.5}, tail_size=len(s))
    points = np.concatenate([s[:20], np.asarray(queries)])
    expected = np.array([exact_p(s, q) for q in points])
    np.testing.assert_array_equal(cal.p_values(points), expected)


@settings(max_examples=60)
@given(
    n=st.integers(50, 3000),
    tail=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    integer_valued=st.booleans(),
)
def test_p_values_exact_in_tail_and_close_in_bulk(
    n: int, tail: int, seed: int, integer_valued: bool
) -> None:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=n)
    if integer_valued:
        s = np.round(s * 3)
    cal = calibrate(s, {"lax": 0.5}, tail_size=tail)
    srt = np.sort(s)
    points = np.concatenate([s, rng.normal(size=50) * 2])
    got = cal.p_values(points)
    expected = np.array([exact_p(s, q) for q in points])
    in_tail = np.searchsorted(srt[:tail], points, side="right") < tail
    np.testing.assert_array_equal(got[in_tail], expected[in_tail])
    # Bulk: interpolated on the quantile grid; off by at most one grid step (plus rounding).
    bound = 1.0 / (QUANTILE_GRID - 1) + 2.0 / (n + 1)
    assert np.all(np.abs(got - expected) <= bound + 1e-12), np.max(np.abs(got - expected))


@settings(max_examples=80)
@given(
    scores=scores_st,
    tail=st.integers(0, 40),
    queries=st.lists(st.floats(-2e6, 2e6), max_size=20),
)
@example(scores=[0.0, 2.2250738585e-313], tail=0, queries=[])  # subnormal knot spacing
def test_the_one_point_p_value_equals_the_vectorised_one_bit_for_bit(
    scores: list[float], tail: int, queries: list[float]
) -> None:
    """The service's single-point path (plain Python floats) against the numpy one, at the
    stored values themselves (ties, grid knots), between them and beyond both ends."""
    cal = calibrate(np.asarray(scores), {"lax": 0.5}, tail_size=tail)
    t, q = np.asarray(cal.tail), np.asarray(cal.quantiles)
    points = np.concatenate([t, q, np.asarray(queries), (q[1:] + q[:-1]) / 2, q[:1] - 1])
    grid = quantile_grid(len(q))
    vectorised = conformal_p_values(points, t, q, cal.n_scores, grid=grid)
    one = [
        conformal_p_value(v, t.tolist(), q.tolist(), cal.n_scores, grid.tolist())
        for v in points.tolist()
    ]
    np.testing.assert_array_equal(np.asarray(one), vectorised)
    assert np.all((vectorised > 0) & (vectorised <= 1))


def test_p_values_between_subnormally_close_quantiles_are_interpolated() -> None:
    """Knots 2e-316 apart: a slope of 0.5 / 2e-316 overflows (np.interp gave inf there)."""
    knots = [0.0, 2.2250738585e-316, 4.450147717e-316]
    grid = [0.0, 0.5, 1.0]
    x = [knots[0] + (knots[1] - knots[0]) * 0.8, knots[1] + (knots[2] - knots[1]) * 0.6]
    # Fractions 0.4 and 0.8 of n = 10 calibration scores: counts 4 and 8 (no tail).
    expected = [(4 + 1) / 11, (8 + 1) / 11]
    vectorised = conformal_p_values(np.asarray(x), np.empty(0), np.asarray(knots), 10)
    np.testing.assert_allclose(vectorised, expected)
    one = [conformal_p_value(v, [], knots, 10, grid) for v in x]
    np.testing.assert_array_equal(np.asarray(one), vectorised)


@given(fpr=st.floats(1e-5, 0.9))
def test_min_scores_for_is_the_smallest_supporting_size(fpr: float) -> None:
    need = min_scores_for(fpr)
    assert conformal_rank(fpr, need) >= 1
    if need > 1:
        assert conformal_rank(fpr, need - 1) == 0


def test_too_small_set_is_refused_with_the_needed_size() -> None:
    scores = np.random.default_rng(1).normal(size=500)
    with pytest.raises(CalibrationError, match=r"'critical' \(fpr 0.001\) needs at least 999"):
        calibrate(scores)
    calibrate(scores[:99], {"warning": 0.01})  # 99 = ⌈1/0.01⌉ - 1 is enough
    with pytest.raises(CalibrationError, match="at least 99 "):
        calibrate(scores[:98], {"warning": 0.01})


@given(scores=st.lists(st.floats(-100, 100), min_size=120, max_size=400), q=st.floats(0, 0.4))
def test_trim_drops_the_lowest_fraction_then_calibrates(scores: list[float], q: float) -> None:
    s = np.asarray(scores)
    n_trim = math.floor(q * len(s))
    cal = calibrate(s, {"w": 0.1}, trim_fraction=q)
    plain = calibrate(np.sort(s)[n_trim:], {"w": 0.1})
    assert cal.n_trimmed == n_trim
    assert cal.n_scores == len(s) - n_trim
    assert cal.levels == plain.levels


def test_non_finite_scores_are_refused() -> None:
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        calibrate(np.array([0.0, np.nan] * 600))


@given(scores=spread)
def test_calibration_survives_json(scores: list[float]) -> None:
    s = np.asarray(scores * (1 + 10 // len(scores)))
    cal = calibrate(s, {"w": 0.4}, tail_size=5)
    again = Calibration.model_validate_json(cal.model_dump_json())
    assert again.levels == cal.levels
    probe = np.concatenate([s, s + 0.5])
    np.testing.assert_array_equal(again.p_values(probe), cal.p_values(probe))


def test_level_of_picks_the_most_severe_crossed_level() -> None:
    cal = calibrate(np.arange(2000.0), {"warning": 0.01, "critical": 0.001})
    warning, critical = cal.levels  # ordered by decreasing rate
    assert (warning.name, critical.name) == ("warning", "critical")
    assert cal.level_of(critical.threshold - 0.5) == "critical"
    assert cal.level_of(critical.threshold) == "warning"  # not strictly below
    assert cal.level_of(warning.threshold) is None
