"""Fixtures for the service tests (helpers live in service_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from densitywatch.client import Client
from densitywatch.service.server import DensityWatchServer
from tests.service.service_support import build_store, make_settings, running_server

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A store of tiny fitted and calibrated models, built once per session (read-only)."""
    root = tmp_path_factory.mktemp("store") / "store"
    artifacts = build_store(root)
    return root, artifacts


@pytest.fixture(scope="module")
def server(built_store: tuple[Path, dict[str, Any]]) -> Iterator[DensityWatchServer]:
    """A shared server over the built store (tests must not depend on its counters)."""
    with running_server(make_settings(built_store[0], max_points_per_call=5000)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: DensityWatchServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=30) as c:
        yield c
