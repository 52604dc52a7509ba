"""The densitywatch method as the detection benchmark runs it: infer, fit, calibrate, score.

Exactly the library path a user's `train` + `calibrate` takes, on a numeric matrix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from densitywatch.density.calibration import calibrate, min_scores_for
from densitywatch.density.model import log_prob_numpy
from densitywatch.training.fit import FitConfig, fit
from densitywatch.training.schema import InferenceOptions, infer_schema_from_matrix


@dataclass
class DensityWatchRun:
    """Scores (log p; higher = more normal) and what the benchmark reports beside them."""

    test_log_p: np.ndarray
    threshold_1pct: float | None  # None: calibration set too small for a 1% level
    train_time_s: float
    n_features: int


def can_calibrate(n_calib: int) -> bool:
    """Whether a calibration set of n_calib rows supports the benchmark's 1% level."""
    return n_calib >= min_scores_for(0.01)


def fit_and_score(
    x_fit: np.ndarray, x_calib: np.ndarray, x_test: np.ndarray, seed: int
) -> DensityWatchRun:
    """Fit on x_fit, calibrate a 1% level on x_calib, return log p of x_test."""
    options = InferenceOptions(constant="categorical")
    schema = infer_schema_from_matrix(x_fit, options=options)
    start = time.perf_counter()
    result = fit(schema, schema.encode(x_fit), FitConfig(seed=seed, show_progress=False))
    train_time = time.perf_counter() - start
    model = result.model.fold()
    threshold = None
    if can_calibrate(len(x_calib)):
        scores = log_prob_numpy(model, schema.encode(x_calib))
        threshold = calibrate(scores, {"fpr_1pct": 0.01}).levels[0].threshold
    return DensityWatchRun(
        test_log_p=log_prob_numpy(model, schema.encode(x_test)),
        threshold_1pct=threshold,
        train_time_s=train_time,
        n_features=x_fit.shape[1],
    )


def training_speed(rows: int = 50_000, features: int = 32, seed: int = 0) -> dict[str, float]:
    """Wall time of the default `fit` on a synthetic correlated, non-Gaussian stream."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(features, features)) / 4
    x = rng.normal(size=(rows, features)) @ mixing + np.sin(rng.normal(size=(rows, features)))
    schema = infer_schema_from_matrix(x)
    start = time.perf_counter()
    result = fit(schema, schema.encode(x), FitConfig(seed=seed, show_progress=False))
    return {
        "rows": rows,
        "features": features,
        "train_time_s": time.perf_counter() - start,
        "epochs": result.epochs,
        "val_nll": result.val_nll,
    }
