"""Normalising-flow density peers (zuko's MAF and NSF) as the detection benchmark fits them.

torch and zuko are imported inside the functions, so that importing this module (and
`benchmarks.detection.methods`) stays light for runs that use no flow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import torch

FlowKind = Literal["maf", "nsf"]

TRANSFORMS = 5
HIDDEN_FEATURES: tuple[int, ...] = (128, 128)
LEARNING_RATE = 1e-3
MAX_BATCH = 256
VAL_FRACTION = 0.1
PATIENCE = 20  # epochs without a better validation NLL before stopping
MAX_EPOCHS = 500
MAX_STEPS = 20_000
# Columns constant on the fit rows are modelled outside the flow as a Gaussian of this std
# (raw units) around the constant: the std GMM's reg_covar 1e-6 gives them.
CONSTANT_STD = 1e-3
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class FittedFlow:
    """A trained flow over the varying columns of standardised inputs, and what it took."""

    flow: Any  # zuko.flows.Flow; Any so that torch stays out of the module's import
    varying: np.ndarray  # bool mask over the columns: True where the flow models the column
    constants: np.ndarray  # the fit rows' value of each constant column
    epochs: int
    steps: int
    best_epoch: int
    val_nll: float  # mean -log p of the validation rows in standardised units (flow columns)
    stopped_nonfinite: bool  # training hit a non-finite loss and stopped at the best state


def constant_columns(x: np.ndarray) -> np.ndarray:
    """Bool mask of the columns whose value is the same on every row of x."""
    return np.all(x == x[:1], axis=0)


def constant_log_p(x: np.ndarray, constants: np.ndarray) -> np.ndarray:
    """Sum over the constant columns of log N(x_j; c_j, CONSTANT_STD²), raw units."""
    if x.shape[1] == 0:
        return np.zeros(len(x))
    r = (x - constants) / CONSTANT_STD
    per_column = -0.5 * r**2 - math.log(CONSTANT_STD) - _LOG_SQRT_2PI
    return np.asarray(np.sum(per_column, axis=1), dtype=np.float64)


def _build(kind: FlowKind, features: int) -> Any:
    import zuko

    cls = zuko.flows.MAF if kind == "maf" else zuko.flows.NSF
    return cls(features=features, transforms=TRANSFORMS, hidden_features=HIDDEN_FEATURES)


def _mean_nll(flow: Any, z: torch.Tensor) -> float:
    import torch

    with torch.no_grad():
        return float(-flow().log_prob(z).mean())


def fit_flow(kind: FlowKind, z: np.ndarray, seed: int, max_epochs: int = MAX_EPOCHS) -> FittedFlow:
    """Train a flow on standardised fit rows z by Adam with early stopping on a seeded random
    VAL_FRACTION of them, restoring the state of lowest validation NLL.

    Constant columns of z are left to the caller (see `constant_log_p`): a flow on a column
    of zero variance would drive its scale to the lower bound and its gradients with it.
    """
    import copy

    import torch

    torch.manual_seed(seed)  # the flow's initial weights
    generator = torch.Generator().manual_seed(seed)  # the batches' order
    varying = ~constant_columns(z)
    constants = z[0, ~varying].copy()
    rng = np.random.default_rng([seed, 32452843])
    order = rng.permutation(len(z))
    n_val = max(1, round(len(z) * VAL_FRACTION))
    # Too few rows to hold any back (2 or fewer): validate on the training rows.
    val_rows, train_rows = (order[:n_val], order[n_val:]) if len(z) > n_val else (order, order)
    z_train = torch.as_tensor(z[train_rows][:, varying], dtype=torch.float32)
    z_val = torch.as_tensor(z[val_rows][:, varying], dtype=torch.float32)
    n_features = int(varying.sum())
    if n_features == 0:
        return FittedFlow(None, varying, constants, 0, 0, 0, 0.0, False)

    flow = _build(kind, n_features)
    optimiser = torch.optim.Adam(flow.parameters(), lr=LEARNING_RATE)
    batch = min(MAX_BATCH, len(z_train))
    best_nll, best_state, best_epoch = _mean_nll(flow, z_val), copy.deepcopy(flow.state_dict()), 0
    if not math.isfinite(best_nll):
        best_nll = math.inf
    steps, epoch, nonfinite = 0, 0, False
    while epoch < max_epochs and steps < MAX_STEPS and not nonfinite:
        epoch += 1
        flow.train()
        for idx in torch.randperm(len(z_train), generator=generator).split(batch):
            loss = -flow().log_prob(z_train[idx]).mean()
            if not torch.isfinite(loss):
                nonfinite = True  # an update from it would make the weights NaN
                break
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            steps += 1
            if steps >= MAX_STEPS:
                break
        flow.eval()
        val = _mean_nll(flow, z_val)
        if math.isfinite(val) and val < best_nll:
            best_nll, best_state, best_epoch = val, copy.deepcopy(flow.state_dict()), epoch
        elif epoch - best_epoch >= PATIENCE:
            break
    flow.load_state_dict(best_state)
    flow.eval()
    return FittedFlow(flow, varying, constants, epoch, steps, best_epoch, best_nll, nonfinite)


def log_prob(fitted: FittedFlow, z: np.ndarray) -> np.ndarray:
    """log p of standardised rows z (standardised units), flow columns plus constant ones.

    The flow is evaluated in float64, so that rows far from the fit data keep a finite log p
    where float32 would overflow.
    """
    import torch

    out = constant_log_p(z[:, ~fitted.varying], fitted.constants)
    if fitted.flow is None:
        return out
    flow64 = fitted.flow.to(torch.float64)
    try:
        with torch.no_grad():
            zt = torch.as_tensor(z[:, fitted.varying], dtype=torch.float64)
            parts = [flow64().log_prob(chunk).numpy() for chunk in zt.split(4096)]
    finally:
        fitted.flow.to(torch.float32)
    return out + np.concatenate(parts).astype(np.float64)


@dataclass
class FlowResult:
    """log p of the test rows in raw units, and what the fit took."""

    test_log_p: np.ndarray
    train_time_s: float
    score_time_s: float
    fitted: FittedFlow
    val_nll_per_dim: float  # raw units, every column (constant ones included)


def fit_and_score(
    kind: FlowKind,
    z_fit: np.ndarray,
    z_test: np.ndarray,
    log_jacobian: float,
    seed: int,
    max_epochs: int = MAX_EPOCHS,
) -> FlowResult:
    """Fit on standardised fit rows and score standardised test rows; log p in raw units
    (minus log_jacobian = sum log sigma of the standardisation)."""
    start = time.perf_counter()
    fitted = fit_flow(kind, z_fit, seed, max_epochs=max_epochs)
    fitted_at = time.perf_counter()
    test_log_p = log_prob(fitted, z_test) - log_jacobian
    scored_at = time.perf_counter()
    d = z_fit.shape[1]
    # The flow's validation NLL covers its columns in standardised units; the constant
    # columns add their (fixed) log p at the constant, the Jacobian converts to raw units.
    n_constant = d - int(fitted.varying.sum())
    constant_nll = n_constant * (math.log(CONSTANT_STD) + _LOG_SQRT_2PI)
    val_nll_raw = (fitted.val_nll + constant_nll + log_jacobian) / d
    return FlowResult(
        test_log_p=test_log_p,
        train_time_s=fitted_at - start,
        score_time_s=scored_at - fitted_at,
        fitted=fitted,
        val_nll_per_dim=val_nll_raw,
    )
