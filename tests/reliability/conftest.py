"""Fixtures for the reliability tests: a session store of tiny calibrated models and a real
in-process server over a copy of it (helpers: service_support, reliability_support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from densitywatch.client import Client
from densitywatch.service.server import DensityWatchServer
from tests.reliability.reliability_support import MAX_MESSAGE_BYTES, MAX_POINTS
from tests.service.service_support import build_store, make_settings, running_server

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """hosts (mixed), alpha/beta (2 numeric), raw (uncalibrated): read-only, built once."""
    root = tmp_path_factory.mktemp("reliability-store") / "store"
    return root, build_store(root)


@pytest.fixture(scope="module")
def server(built_store: tuple[Path, dict[str, Any]]) -> Iterator[DensityWatchServer]:
    """A shared server with small limits (tests compare counter deltas, never totals)."""
    settings = make_settings(
        built_store[0], max_points_per_call=MAX_POINTS, max_message_bytes=MAX_MESSAGE_BYTES
    )
    with running_server(settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: DensityWatchServer) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", timeout=30) as c:
        yield c
