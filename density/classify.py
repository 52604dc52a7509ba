"""Generative classification: the posterior over streams by Bayes' rule on log densities."""

from __future__ import annotations

import numpy as np


def posterior(log_p: np.ndarray, priors: np.ndarray | None = None) -> np.ndarray:
    """p(stream | x) for log densities log_p (n, S) and priors (S,) (uniform when None).

    Computed in log space (log-sum-exp), so densities far below float range still compare.
    """
    log_p = np.asarray(log_p, dtype=np.float64)
    n_streams = log_p.shape[1]
    if priors is None:
        priors = np.full(n_streams, 1.0 / n_streams)
    priors = np.asarray(priors, dtype=np.float64)
    if priors.shape != (n_streams,) or (priors < 0).any() or priors.sum() <= 0:
        raise ValueError(f"priors must be {n_streams} non-negative numbers with a positive sum")
    with np.errstate(divide="ignore"):
        log_prior = np.log(priors / priors.sum())
    joint = log_p + log_prior
    top = joint.max(axis=1, keepdims=True)
    # A point impossible under every stream tells nothing: its posterior is the prior.
    impossible = ~np.isfinite(top[:, 0])
    joint[impossible] = log_prior
    top[impossible] = log_prior.max()
    weights = np.exp(joint - top)
    return weights / weights.sum(axis=1, keepdims=True)
