"""`densitywatch serve`: run the scoring service until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import Any

from densitywatch.service.server import DensityWatchServer
from densitywatch.service.settings import ServiceSettings, load_settings

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the gRPC scoring service",
        description="Serve the calibrated models of a store over gRPC. Every option can also "
        "be set by environment (DENSITYWATCH_*, see docs/settings.md); options win.",
    )
    p.add_argument("--store", help="model store folder (DENSITYWATCH_MODEL_STORE)")
    p.add_argument("--host", help="gRPC bind address (DENSITYWATCH_GRPC_HOST)")
    p.add_argument("--port", type=int, help="gRPC port (DENSITYWATCH_GRPC_PORT)")
    p.add_argument("--metrics-port", type=int, help="metrics port (DENSITYWATCH_METRICS_PORT)")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> ServiceSettings:
    overrides = {
        "model_store": args.store,
        "grpc_host": args.host,
        "grpc_port": args.port,
        "metrics_port": args.metrics_port,
    }
    return load_settings(**{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)  # UsageError (exit 2) naming any invalid variable
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %d: draining", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = DensityWatchServer(settings)
    server.start()
    server.load()
    stop.wait()
    server.stop()
    return 0
