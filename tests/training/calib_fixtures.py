"""Helpers for the calibrate / sample / classify tests: small real models in real stores.

Models are fitted once per process (cached by their data recipe) and written into each
test's own store, so tests never see each other's versions.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from densitywatch.density.artifact import Artifact, ArtifactStore, TrainingInfo, fingerprint
from densitywatch.training.data import encode_table
from densitywatch.training.fit import Capacity, FitConfig, FitResult, fit
from densitywatch.training.schema import infer_schema

torch.set_num_threads(1)

SMALL = FitConfig(
    max_steps=300,
    show_progress=False,
    capacities=[Capacity(hidden_width=32, n_components=3, n_orderings=1)],
)


def gaussian(n: int, seed: int, mean: float = 0.0, std: float = 1.0, name: str = "x0") -> dict:
    """One N(mean, std²) column."""
    return {name: np.random.default_rng(seed).normal(mean, std, n)}


def correlated_with_colour(n: int, seed: int) -> dict:
    """x0 ~ N(3, 2²), x1 = 0.5·x0 + N(0, 0.5²), colour in red/green/blue (0.6/0.3/0.1)."""
    rng = np.random.default_rng(seed)
    x0 = rng.normal(3.0, 2.0, n)
    x1 = 0.5 * x0 + rng.normal(0.0, 0.5, n)
    colour = np.empty(n, dtype=object)
    colour[:] = rng.choice(["red", "green", "blue"], size=n, p=[0.6, 0.3, 0.1]).tolist()
    return {"x0": x0, "x1": x1, "colour": colour}


def mixed(n: int, seed: int) -> dict:
    """A number column and a text column."""
    rng = np.random.default_rng(seed)
    os_ = np.empty(n, dtype=object)
    os_[:] = rng.choice(["linux", "windows"], size=n, p=[0.7, 0.3]).tolist()
    return {"cpu": rng.normal(50.0, 10.0, n), "os": os_}


RECIPES = {
    "gauss": lambda: gaussian(3000, seed=100),
    "low": lambda: gaussian(2000, seed=101, mean=-3.0),
    "high": lambda: gaussian(2000, seed=102, mean=3.0),
    "corr": lambda: correlated_with_colour(4000, seed=103),
    "mixed": lambda: mixed(2000, seed=104),
    "other": lambda: gaussian(2000, seed=105, name="y"),
}


@functools.cache
def fitted(recipe: str) -> tuple[FitResult, TrainingInfo]:
    """Fit (once per process) a small model on a recipe's training data."""
    columns = RECIPES[recipe]()
    schema = infer_schema(columns)
    x = encode_table(schema, columns)
    result = fit(schema, x, SMALL)
    return result, result.training_info(fingerprint(x), seed=0)


def training_columns(recipe: str) -> dict:
    return RECIPES[recipe]()


def add_stream(store: ArtifactStore, stream: str, recipe: str) -> Artifact:
    """Write the recipe's fitted model as a new (uncalibrated) version of `stream`."""
    result, info = fitted(recipe)
    return store.write(result.model, result.manifest(stream, info))


def write_csv(path: Path, columns: Mapping[str, np.ndarray]) -> Path:
    """Columns to a CSV file with a header (None / NaN written as empty cells)."""
    names = list(columns)
    n = len(columns[names[0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i in range(n):
            writer.writerow([_cell(columns[name][i]) for name in names])
    return path


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return repr(float(v)) if isinstance(v, float | np.floating) else str(v)
