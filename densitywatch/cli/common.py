"""What every command shares: the streams config and store it works on, and its output.

Offline commands resolve `--config` one way (`config_path`) and print one JSON shape under
`--json` (`emit`): an object with `command`, `ok`, `error` and `streams` (per-stream results,
each with its own `ok`), plus the command's records where it has any. It imports the
training side and the store only when a command uses them, so `serve` and `score` stay light.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from densitywatch.errors import UsageError

if TYPE_CHECKING:
    from densitywatch.density.artifact import ArtifactStore
    from densitywatch.training.config import StreamsConfig

CONFIG_ENV = "DENSITYWATCH_CONFIG"
DEFAULT_CONFIG = Path("densitywatch.toml")


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help=f"streams config (TOML); default ${CONFIG_ENV}, else ./{DEFAULT_CONFIG} if present",
    )


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --store, for the commands that read the model store."""
    add_config_argument(parser)
    parser.add_argument(
        "--store", type=Path, help="model store folder (default: the config's store)"
    )


def add_json_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print one JSON object on stdout ({what}) instead of text",
    )


def config_path(given: Path | None) -> Path | None:
    """--config, else $DENSITYWATCH_CONFIG, else ./densitywatch.toml if it exists, else None."""
    if given is not None:
        return given
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def open_config(args: argparse.Namespace) -> StreamsConfig | None:
    """The resolved streams config, or None when there is none to read."""
    from densitywatch.training.config import load_config

    path = config_path(args.config)
    return None if path is None else load_config(path)


def require_config(args: argparse.Namespace) -> StreamsConfig:
    config = open_config(args)
    if config is None:
        raise UsageError(
            f"no streams config: give --config, set ${CONFIG_ENV}, or create ./{DEFAULT_CONFIG}"
        )
    return config


def open_store(args: argparse.Namespace, config: StreamsConfig | None) -> ArtifactStore:
    from densitywatch.density.artifact import ArtifactStore

    if args.store is not None:
        return ArtifactStore(args.store)
    if config is None:
        raise UsageError(f"give --store or --config (or set ${CONFIG_ENV})")
    return ArtifactStore(config.store)


def parse_assignments(items: list[str] | None, what: str) -> dict[str, float]:
    """NAME=NUMBER pairs (e.g. --level warning=0.01, --prior hosts=0.7)."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise UsageError(f"{what} {item!r}: expected NAME=NUMBER")
        if name in out:
            raise UsageError(f"{what} {name!r} given twice")
        out[name] = number
    return out


def error_text(e: BaseException) -> str:
    return str(e) or type(e).__name__


def envelope(
    command: str,
    streams: Mapping[str, Mapping[str, Any]],
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The one `--json` shape of every offline command."""
    ok = error is None and all(bool(r.get("ok")) for r in streams.values())
    return {"command": command, "ok": ok, "error": error, "streams": dict(streams), **extra}


def emit(
    command: str,
    streams: Mapping[str, Mapping[str, Any]],
    out: TextIO,
    error: str | None = None,
    **extra: Any,
) -> None:
    out.write(json.dumps(envelope(command, streams, error, **extra), indent=2) + "\n")
