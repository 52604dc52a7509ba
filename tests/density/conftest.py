"""Fixtures for the density-layer tests (helpers live in density_support.py)."""

from __future__ import annotations

import pytest
import torch
from density_support import mixed_schema

from density.schema import Schema

torch.set_num_threads(1)


@pytest.fixture
def schema_mixed() -> Schema:
    """Every feature kind at once, categoricals of different vocabulary sizes."""
    return mixed_schema()
