"""Helpers of the detection benchmark tests: synthetic ADBench-like datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dataset(
    path: Path, n_normal: int, n_anomaly: int, d: int, shift: float, seed: int
) -> None:
    """An ADBench-style .npz (arrays X and y): Gaussian normals, anomalies shifted by `shift`."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(size=(n_normal, d))
    anomaly = rng.normal(size=(n_anomaly, d)) + shift
    x = np.concatenate([normal, anomaly])
    y = np.concatenate([np.zeros(n_normal, dtype=np.int64), np.ones(n_anomaly, dtype=np.int64)])
    order = rng.permutation(len(y))
    np.savez(path, X=x[order], y=y[order])
