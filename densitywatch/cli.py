"""The `densitywatch` command: one entry point over the training and service commands.

Each command module exposes `register(subparsers)`, which adds its sub-command and sets
`func` (taking the parsed args, returning an exit code). Only the module of the command being
run is imported, so `densitywatch serve` never loads `training/` (nor scikit-learn); a bare
`densitywatch --help` imports them all to list them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "train": "training.commands.train",
    "calibrate": "training.commands.calibrate",
    "sample": "training.commands.sample",
    "classify": "training.commands.classify",
    "serve": "service.commands.serve",
    "score": "service.commands.score",
}
COMMAND_MODULES = list(COMMANDS.values())


def _requested(argv: list[str]) -> list[str]:
    """The modules to import: the named command's alone, or all of them (help, errors)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return [COMMANDS[first]] if first in COMMANDS else COMMAND_MODULES


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="densitywatch", description="Anomaly detection by autoregressive density models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_requested(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
