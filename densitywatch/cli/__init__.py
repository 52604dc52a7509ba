"""The `densitywatch` command: one entry point over the training and service commands.

Each command module exposes `register(subparsers)`, which adds its sub-command and sets
`func` (taking the parsed args, returning an exit code). Only the module of the command being
run is imported, so `densitywatch serve` never loads the training side (nor scikit-learn); a
bare `densitywatch --help` imports them all to list them.

Errors become exit codes here and nowhere else: 0 ok, 1 failed, 2 bad usage (argparse's own
errors included). A `DensityWatchError` prints one line, `densitywatch <command>: error: ...`,
and its class's `exit_code`; anything else is an internal error (1). `--debug` adds the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from densitywatch.cli.common import emit
from densitywatch.errors import EXIT_FAILED, DensityWatchError

COMMANDS = {
    "train": "densitywatch.cli.train",
    "calibrate": "densitywatch.cli.calibrate",
    "sample": "densitywatch.cli.sample",
    "classify": "densitywatch.cli.classify",
    "serve": "densitywatch.cli.serve",
    "score": "densitywatch.cli.score",
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
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES if modules is None else modules:
        importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():
        # Also accepted after the command; SUPPRESS keeps the top-level value when absent.
        sub.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks"
        )
    return parser


def _fail(args: argparse.Namespace, exc: BaseException, message: str) -> None:
    print(f"densitywatch {args.command}: error: {message}", file=sys.stderr)
    if args.debug:
        traceback.print_exception(exc)
    if getattr(args, "json", False):
        emit(args.command, {}, sys.stdout, error=message)


def run(args: argparse.Namespace) -> int:
    """The command's exit code, with every error mapped to one line and a code."""
    try:
        return int(args.func(args) or 0)
    except DensityWatchError as e:
        _fail(args, e, str(e))
        return e.exit_code
    except OSError as e:
        _fail(args, e, str(e))
        return EXIT_FAILED
    except Exception as e:
        hint = "" if args.debug else " (rerun with --debug for the traceback)"
        _fail(args, e, f"internal error: {type(e).__name__}: {e}{hint}")
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_requested(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
