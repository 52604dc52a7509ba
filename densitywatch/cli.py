"""The `densitywatch` command: one entry point over the training and service commands.

Each command module exposes `register(subparsers)`, which adds its sub-command and sets
`func` (taking the parsed args, returning an exit code). Modules are listed here by name
so that adding a command touches only its own module and this list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMAND_MODULES = [
    "training.commands.train",
    "training.commands.calibrate",
    "training.commands.sample",
    "training.commands.classify",
    "service.commands.serve",
    "service.commands.score",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densitywatch", description="Anomaly detection by autoregressive density models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
