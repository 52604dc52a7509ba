"""Fixtures for the density-layer tests (helpers live in density_support.py)."""

from __future__ import annotations

import pytest
import torch

from densitywatch.density.schema import Schema
from tests.density.density_support import mixed_schema

torch.set_num_threads(1)


@pytest.fixture
def schema_mixed() -> Schema:
    """Every feature kind at once, categoricals of different vocabulary sizes."""
    return mixed_schema()
