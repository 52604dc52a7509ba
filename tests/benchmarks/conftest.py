"""Fixtures of the benchmark tests: a tiny ADBench-like data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchmarks.detection_support import write_dataset


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "adbench").mkdir(parents=True)
    (root / "published").mkdir()
    # "easy": anomalies far away; enough normals (fit half 500) for a 1% calibration level.
    write_dataset(root / "adbench" / "1_Easy.npz", 1000, 30, 3, shift=6.0, seed=1)
    write_dataset(root / "adbench" / "2_small.set.npz", 120, 10, 4, shift=1.5, seed=2)
    (root / "published" / "semi_supervised_aucroc.csv").write_text(
        "dataset,KNN,KNN_std,IForest,IForest_std\neasy,99.0,0.1,97.0,0.5\n"
    )
    return root
