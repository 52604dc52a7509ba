"""Generative classification: the posterior over streams by Bayes' rule on log densities."""

from __future__ import annotations

import numpy as np


def posterior(log_p: np.ndarray, priors: np.ndarray | None = None) -> np.ndarray:
    """p(stream | x) for log densities log_p (n, S) and priors (S,) (uniform when None).

    Computed in log space (log-sum-exp), so densities far below float range still compare.

    Example:
        >>> log_p = np.array([[np.log(0.2), np.log(0.6)], [-np.inf, -np.inf]])
        >>> posterior(log_p).round(2)  # the second point is impossible under both streams
        array([[0.25, 0.75],
               [0.5 , 0.5 ]])
        >>> posterior(log_p, priors=np.array([3.0, 1.0])).round(2)
        array([[0.5 , 0.5 ],
               [0.75, 0.25]])
        >>> posterior(np.array([[-1e4, -1e4 - np.log(3.0)]])).round(2)  # exp(-1e4) underflows
        array([[0.75, 0.25]])
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
