"""Shared fixtures for the training tests: single-threaded torch and tiny data files.

Helpers are handed out as fixtures (not imported) so that test folders without packages
cannot pick up another folder's conftest module.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _hosts_rows(n: int, seed: int = 0, missing_every: int = 0) -> list[list[Any]]:
    """Synthetic host metrics: cpu (skewed, continuous), mem (integer), os (text), label."""
    rng = np.random.default_rng(seed)
    rows: list[list[Any]] = []
    for i in range(n):
        cpu: Any = f"{rng.gamma(2.0, 1.0):.5f}"
        if missing_every and i % missing_every == 0:
            cpu = ""
        rows.append([cpu, int(rng.poisson(40)), str(rng.choice(["linux", "win", "mac"])), i % 2])
    return rows


@pytest.fixture
def write_csv() -> Callable[[Path, Sequence[str], Sequence[Sequence[Any]]], Path]:
    """write_csv(path, header, rows) -> path."""
    return _write_csv


@pytest.fixture
def hosts_rows() -> Callable[..., list[list[Any]]]:
    """hosts_rows(n, seed=0, missing_every=0): rows of cpu, mem, os, label."""
    return _hosts_rows
