"""The detectors the benchmark compares: densitywatch and its peers, behind one interface.

Every method takes a split and returns anomaly scores for the test rows (higher = more
anomalous) plus timings; density methods (densitywatch, gmm, maf, nsf) also return log p of the
test rows; sogaal (SO_GAAL, a GAN's discriminator) gives no likelihood.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from benchmarks.detection import flows

METHODS: tuple[str, ...] = (
    "densitywatch",
    "knn",
    "iforest",
    "ecod",
    "lof",
    "gmm",
    "maf",
    "nsf",
    "sogaal",
)
PEERS: tuple[str, ...] = ("knn", "iforest", "ecod", "lof", "sogaal")
FLOWS: tuple[flows.FlowKind, ...] = ("maf", "nsf")
# Detectors whose PyOD decision_function is a normality score (higher = more normal): SO_GAAL
# returns its discriminator's D(x), the probability that x is real data, where its paper
# (Liu et al. 2019, Algorithm 1) scores outliers by 1 - D(x); pyod issue #119 reports it.
NORMALITY_SCORES: frozenset[str] = frozenset({"sogaal"})
# Methods that compute with torch: the harness sets torch's thread count when one runs.
TORCH_METHODS: tuple[str, ...] = ("densitywatch", "maf", "nsf", "sogaal")
GMM_COMPONENTS: tuple[int, ...] = (1, 2, 4, 8, 16)
GMM_REG_COVAR = 1e-6
NONFINITE_LOG_P = -1e12  # at most this for a test row whose log p is NaN or inf


@dataclass
class Split:
    """One seed's split of one dataset (rows of the raw feature matrix)."""

    x_fit: np.ndarray  # the fit half of the normals
    x_test: np.ndarray
    y_test: np.ndarray  # 1 = anomaly
    seed: int


@dataclass
class Calibrated:
    """densitywatch's deployment path: a model fitted without its held-back calibration rows,
    its 1% log p threshold from those rows, and its log p of the test rows."""

    test_log_p: np.ndarray
    threshold_1pct: float


@dataclass
class MethodRun:
    """What one method produced on one split."""

    score: np.ndarray  # anomaly score of each test row, higher = more anomalous
    train_time_s: float
    score_time_s: float
    n_fit: int  # rows the method was fitted on (after any cap)
    log_p: np.ndarray | None = None  # density methods: log p of each test row
    calibrated: Calibrated | None = None  # densitywatch, when the calibration set allows 1%
    extra: dict[str, float | int | None] | None = None


@dataclass
class MethodOptions:
    """Knobs the command line passes to the methods."""

    n_jobs: int = 1
    fit_caps: dict[str, int] | None = None  # method -> max fit rows (random subsample)
    calib_fraction: float = 0.2
    flow_max_epochs: int = flows.MAX_EPOCHS  # tests lower it; runs keep the default


def cap_rows(x: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """A random subsample of at most `cap` rows (all rows when cap is None or not exceeded)."""
    if cap is None or len(x) <= cap:
        return x
    rng = np.random.default_rng([seed, 7919])
    return x[np.sort(rng.choice(len(x), size=cap, replace=False))]


def standardiser(x_fit: np.ndarray) -> StandardScaler:
    """StandardScaler fitted on the fit rows; constant columns keep scale 1."""
    return StandardScaler().fit(x_fit)


def run_densitywatch(split: Split, options: MethodOptions) -> MethodRun:
    """Ranking metrics from a model fitted on the whole fit half (the rows the peers fit on);
    the calibrated 1% threshold from a second model fitted on the rest of the fit half once
    `calib_fraction` of it is held back, as `train` + `calibrate` would deploy it."""
    from benchmarks.detection import dw  # torch import only when densitywatch runs

    rng = np.random.default_rng([split.seed, 104729])
    x_fit = split.x_fit[rng.permutation(len(split.x_fit))]
    n_calib = round(len(x_fit) * options.calib_fraction)
    start = time.perf_counter()
    result = dw.fit_and_score(x_fit=x_fit, x_calib=x_fit[:0], x_test=split.x_test, seed=split.seed)
    total = time.perf_counter() - start
    log_p = np.asarray(result.test_log_p, dtype=np.float64)
    return MethodRun(
        score=-log_p,
        train_time_s=float(result.train_time_s),
        score_time_s=max(total - float(result.train_time_s), 0.0),
        n_fit=len(x_fit),
        log_p=log_p,
        calibrated=_calibrated(x_fit, n_calib, split) if dw.can_calibrate(n_calib) else None,
        extra={"n_calib": n_calib},
    )


def _calibrated(x_fit: np.ndarray, n_calib: int, split: Split) -> Calibrated:
    """Fit on x_fit[n_calib:], calibrate the 1% level on x_fit[:n_calib], score the test rows."""
    from benchmarks.detection import dw

    result = dw.fit_and_score(
        x_fit=x_fit[n_calib:], x_calib=x_fit[:n_calib], x_test=split.x_test, seed=split.seed
    )
    if result.threshold_1pct is None:  # the caller checked can_calibrate(n_calib)
        raise RuntimeError(f"{n_calib} calibration rows gave no 1% threshold")
    return Calibrated(
        test_log_p=np.asarray(result.test_log_p, dtype=np.float64),
        threshold_1pct=float(result.threshold_1pct),
    )


def _pyod_model(name: str, seed: int, n_jobs: int) -> object:
    # Default parameters as ADBench uses them (its PyOD wrapper passes only random_state).
    if name == "knn":
        from pyod.models.knn import KNN

        return KNN(n_jobs=n_jobs)
    if name == "lof":
        from pyod.models.lof import LOF

        return LOF(n_jobs=n_jobs)
    if name == "iforest":
        from pyod.models.iforest import IForest

        return IForest(random_state=seed)
    if name == "ecod":
        from pyod.models.ecod import ECOD

        return ECOD()
    if name == "sogaal":
        import torch
        from pyod.models.so_gaal import SO_GAAL

        # SO_GAAL takes no random_state: its weights, noise and batch order come from
        # torch's global generator, seeded here.
        torch.manual_seed(seed)
        return SO_GAAL()
    raise ValueError(f"unknown peer method {name!r}")


def run_pyod(name: str, split: Split, options: MethodOptions) -> MethodRun:
    """A PyOD detector on standardised inputs (scaler fitted on the fit rows, as ADBench does);
    higher scores = more anomalous (SO_GAAL's normality score is turned round)."""
    cap = (options.fit_caps or {}).get(name)
    x_fit = cap_rows(split.x_fit, cap, split.seed)
    scaler = standardiser(x_fit)
    z_fit, z_test = scaler.transform(x_fit), scaler.transform(split.x_test)
    model = _pyod_model(name, split.seed, options.n_jobs)
    start = time.perf_counter()
    # SO_GAAL prints a line per epoch; the benchmark's output is its progress bar.
    with contextlib.redirect_stdout(io.StringIO()):
        model.fit(z_fit)  # type: ignore[attr-defined]
    fitted = time.perf_counter()
    score = np.asarray(model.decision_function(z_test), dtype=np.float64)  # type: ignore[attr-defined]
    if name in NORMALITY_SCORES:
        score = 1.0 - score  # the harness ranks by anomaly score
    return MethodRun(
        score=score,
        train_time_s=fitted - start,
        score_time_s=time.perf_counter() - fitted,
        n_fit=len(x_fit),
    )


def _gmm_candidates(n_rows: int, n_features: int) -> list[int]:
    """Component counts tried: at least d + 1 rows per component on average (1 always)."""
    limit = max(1, n_rows // (n_features + 1))
    return [k for k in GMM_COMPONENTS if k == 1 or k <= limit]


def _fit_gmm(z: np.ndarray, k: int, seed: int, reg: float) -> GaussianMixture | None:
    import warnings

    gmm = GaussianMixture(
        n_components=k,
        covariance_type="full",
        reg_covar=reg,
        random_state=seed,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm.fit(z)
    except (ValueError, np.linalg.LinAlgError):
        return None  # ill-defined covariance (duplicated / discrete data): try the next
    return gmm


def run_gmm(split: Split, options: MethodOptions) -> MethodRun:
    """Gaussian mixture, components chosen by held-out likelihood, log p in raw units."""
    cap = (options.fit_caps or {}).get("gmm")
    x_fit = cap_rows(split.x_fit, cap, split.seed)
    start = time.perf_counter()
    scaler = standardiser(x_fit)
    z = scaler.transform(x_fit)
    log_jacobian = float(np.sum(np.log(scaler.scale_)))  # log|dz/dx| = -sum log sigma
    rng = np.random.default_rng([split.seed, 15485863])
    order = rng.permutation(len(z))
    n_val = max(1, round(len(z) * 0.2))
    z_val, z_tr = z[order[:n_val]], z[order[n_val:]]
    reg = GMM_REG_COVAR
    best: tuple[float, int] | None = None
    while best is None:
        for k in _gmm_candidates(len(z_tr), z.shape[1]):
            gmm = _fit_gmm(z_tr, k, split.seed, reg)
            if gmm is None:
                continue
            val = float(gmm.score(z_val))
            if math.isfinite(val) and (best is None or val > best[0]):
                best = (val, k)
        if best is None:
            if reg >= 1.0:
                raise RuntimeError("GaussianMixture failed for every component count")
            reg *= 10.0
    k_best = best[1]
    final = _fit_gmm(z, k_best, split.seed, reg)
    while final is None and reg < 1.0:
        reg *= 10.0
        final = _fit_gmm(z, k_best, split.seed, reg)
    if final is None:
        raise RuntimeError("GaussianMixture refit failed")
    fitted = time.perf_counter()
    log_p = final.score_samples(scaler.transform(split.x_test)) - log_jacobian
    return MethodRun(
        score=-log_p,
        train_time_s=fitted - start,
        score_time_s=time.perf_counter() - fitted,
        n_fit=len(x_fit),
        log_p=log_p,
        extra={"n_components": k_best, "reg_covar": reg},
    )


def finite_log_p(log_p: np.ndarray) -> tuple[np.ndarray, int]:
    """log p with every non-finite value replaced by one below all finite ones (so those rows
    rank as the most anomalous, where NaN would break ROC-AUC), and how many there were."""
    bad = ~np.isfinite(log_p)
    if not bad.any():
        return log_p, 0
    finite = log_p[~bad]
    floor = min(NONFINITE_LOG_P, float(finite.min()) - 1.0) if finite.size else NONFINITE_LOG_P
    return np.where(bad, floor, log_p), int(bad.sum())


def run_flow(kind: flows.FlowKind, split: Split, options: MethodOptions) -> MethodRun:
    """zuko's MAF or NSF on standardised inputs, log p in raw units.

    Columns constant on the fit rows stay out of the flow: each is a Gaussian of std
    `flows.CONSTANT_STD` (1e-3, raw units) around its constant, as GMM's reg_covar makes
    it, so a test row that differs there is very improbable.
    """
    cap = (options.fit_caps or {}).get(kind)
    x_fit = cap_rows(split.x_fit, cap, split.seed)
    start = time.perf_counter()
    scaler = standardiser(x_fit)
    z_fit, z_test = scaler.transform(x_fit), scaler.transform(split.x_test)
    log_jacobian = float(np.sum(np.log(scaler.scale_)))  # log|dz/dx| = -sum log sigma
    prepared = time.perf_counter() - start
    result = flows.fit_and_score(
        kind, z_fit, z_test, log_jacobian, split.seed, max_epochs=options.flow_max_epochs
    )
    log_p, n_bad = finite_log_p(result.test_log_p)
    fitted = result.fitted
    return MethodRun(
        score=-log_p,
        train_time_s=prepared + result.train_time_s,
        score_time_s=result.score_time_s,
        n_fit=len(x_fit),
        log_p=log_p,
        extra={
            "epochs": fitted.epochs,
            "best_epoch": fitted.best_epoch,
            "steps": fitted.steps,
            "val_nll_per_dim": result.val_nll_per_dim,
            "constant_columns": int((~fitted.varying).sum()),
            "nonfinite_log_p": n_bad,
            "stopped_nonfinite": int(fitted.stopped_nonfinite),
        },
    )


def runner(name: str) -> Callable[[Split, MethodOptions], MethodRun]:
    """The function that runs method `name` on a split."""
    if name == "densitywatch":
        return run_densitywatch
    if name == "gmm":
        return run_gmm
    if name in PEERS:
        return lambda split, options: run_pyod(name, split, options)
    if name == "maf":
        return lambda split, options: run_flow("maf", split, options)
    if name == "nsf":
        return lambda split, options: run_flow("nsf", split, options)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
