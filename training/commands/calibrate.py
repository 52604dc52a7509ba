"""`densitywatch calibrate`: set conformal thresholds on a clean hold-out, as a batch job.

No prompts; exit 0 when every stream calibrated, 1 when any failed (the others still run),
2 for bad arguments. `--json` prints one JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from density.artifact import ArtifactError, ArtifactStore
from density.calibration import DEFAULT_LEVELS, CalibrationError
from training.calibrate import CalibrationDataError, CalibrationReport, calibrate_stream
from training.config import ConfigError, StreamsConfig, load_config
from training.data import DataError, read_table

log = logging.getLogger(__name__)
CONFIG_ENV = "DENSITYWATCH_CONFIG"
DEFAULT_CONFIG = Path("densitywatch.toml")
DATA_SUFFIXES = (".csv", ".parquet", ".npy", ".npz")
DEFAULT_LEVEL_NAMES = ("warning", "critical")


class UsageError(ValueError):
    """Arguments that cannot work together."""


# -- shared by calibrate, sample, classify -------------------------------------------------
def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and --store, shared by the commands that read the model store."""
    parser.add_argument(
        "--config",
        type=Path,
        help=f"streams config (TOML); default ${CONFIG_ENV}, else {DEFAULT_CONFIG} if present",
    )
    parser.add_argument(
        "--store", type=Path, help="model store folder (default: the config's store)"
    )


def open_config(args: argparse.Namespace) -> StreamsConfig | None:
    """The --config file, else $DENSITYWATCH_CONFIG, else ./densitywatch.toml if it exists."""
    path = args.config or os.environ.get(CONFIG_ENV)
    if path:
        return load_config(path)
    return load_config(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None


def open_store(args: argparse.Namespace, config: StreamsConfig | None) -> ArtifactStore:
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
            number = float("nan")
        if not sep or not name or not np.isfinite(number):
            raise UsageError(f"{what} {item!r}: expected NAME=NUMBER")
        if name in out:
            raise UsageError(f"{what} {name!r} given twice")
        out[name] = number
    return out


def error_text(e: BaseException) -> str:
    return str(e) or type(e).__name__


# -- calibrate ------------------------------------------------------------------------------
def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="set alarm thresholds on a clean hold-out (new artifact version)",
        description=(
            "Score a clean hold-out with each stream's newest model, set one split-conformal "
            "threshold per level and write a new artifact version carrying them, plus a report. "
            f"Default levels: {', '.join(f'{k}={v:g}' for k, v in DEFAULT_LEVELS.items())}."
        ),
    )
    add_store_arguments(p)
    p.add_argument(
        "--stream",
        action="append",
        help="stream to calibrate (repeatable; "
        "default: every stream of the config, else of the store)",
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help=(
            "hold-out file or folder of files (.csv, .parquet, .npy, .npz); with several streams, "
            "a folder holding <stream>/ or <stream>.<ext> per stream"
        ),
    )
    p.add_argument(
        "--fpr",
        type=float,
        action="append",
        help=(
            "target false-positive rate (repeatable, at most two: the larger is 'warning', the "
            "smaller 'critical')"
        ),
    )
    p.add_argument(
        "--level",
        action="append",
        metavar="NAME=FPR",
        help="named level with its target false-positive rate (repeatable)",
    )
    p.add_argument(
        "--trim",
        type=float,
        default=0.0,
        metavar="Q",
        help=(
            "drop the lowest Q fraction of scores first (robust to a few anomalies in the "
            "hold-out; the FPR on clean data can then exceed the target by up to Q)"
        ),
    )
    p.add_argument(
        "--label-column",
        help="column of labels (1/true/anomaly = anomaly): "
        "anomalies are left out of calibration and used for metrics",
    )
    p.add_argument("--version", help="model version to calibrate (default: newest)")
    p.add_argument(
        "--report-dir",
        type=Path,
        help=(
            "report folder; reports go to <dir>/<stream>/<version>/ (default "
            "<store>/<stream>/reports/<version>/)"
        ),
    )
    p.add_argument("--no-report", action="store_true", help="skip the PNG/JSON report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=run)


def levels_from(args: argparse.Namespace) -> dict[str, float]:
    if args.fpr and args.level:
        raise UsageError("give either --fpr or --level, not both")
    if args.level:
        return parse_assignments(args.level, "--level")
    if not args.fpr:
        return dict(DEFAULT_LEVELS)
    rates = sorted(set(args.fpr), reverse=True)
    if len(rates) != len(args.fpr) or len(rates) > len(DEFAULT_LEVEL_NAMES):
        raise UsageError("--fpr takes one or two distinct rates; name more with --level")
    return dict(zip(DEFAULT_LEVEL_NAMES, rates, strict=False))


def streams_from(
    args: argparse.Namespace, config: StreamsConfig | None, store: ArtifactStore
) -> list[str]:
    if args.stream:
        return list(dict.fromkeys(args.stream))
    names = config.sorted_names() if config else store.streams()
    if not names:
        raise UsageError(f"no streams to calibrate in {store.root}")
    return names


def data_path_for(data: Path, stream: str, several: bool) -> Path:
    """The stream's hold-out: `data` itself, or its per-stream entry for several streams."""
    if not several:
        return data
    if not data.is_dir():
        raise UsageError("with several streams, --data must be a folder of per-stream data")
    candidates = [data / stream, *(data / f"{stream}{suffix}" for suffix in DATA_SUFFIXES)]
    found = [c for c in candidates if c.exists()]
    if not found:
        raise DataError(
            f"no hold-out for stream {stream!r} in {data} (expected {stream}/ or "
            f"{stream}.csv|.parquet|.npy|.npz)"
        )
    return found[0]


def label_column_for(
    args: argparse.Namespace, config: StreamsConfig | None, stream: str, columns: Mapping[str, Any]
) -> str | None:
    """--label-column (must be present), else the config's label column if the data has it."""
    if args.label_column:
        return str(args.label_column)
    stream_config = config.streams.get(stream) if config else None
    label = stream_config.label_column if stream_config else None
    return label if label and label in columns else None


def calibrate_one(
    args: argparse.Namespace,
    config: StreamsConfig | None,
    store: ArtifactStore,
    stream: str,
    several: bool,
) -> CalibrationReport:
    path = data_path_for(args.data, stream, several)
    columns = read_table(path)
    report = calibrate_stream(
        store,
        stream,
        columns,
        levels=levels_from(args),
        trim_fraction=args.trim,
        label_column=label_column_for(args, config, stream, columns),
        version=args.version,
        data_source=str(path),
        report_root=args.report_dir,
        write_report=not args.no_report,
        show_progress=False if args.quiet else None,
    )
    return report


def summary_line(report: CalibrationReport) -> str:
    levels = ", ".join(
        f"{lv.name} (fpr {lv.target_fpr:g}): log p < {lv.threshold:.4g}" for lv in report.levels
    )
    line = (
        f"{report.stream}: version {report.version} (from {report.parent_version}) "
        f"calibrated on {report.n_scores} records; {levels}"
    )
    if report.metrics and report.metrics.roc_auc is not None:
        line += f"; ROC-AUC {report.metrics.roc_auc:.3f}, PR-AUC {report.metrics.pr_auc:.3f}"
    if report.report_png:
        line += f"; report {Path(report.report_png).parent}"
    return line


def run(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    try:
        config = open_config(args)
        store = open_store(args, config)
        levels_from(args)
        streams = streams_from(args, config, store)
    except (UsageError, ConfigError, CalibrationError) as e:
        return _finish(args, {}, f"calibrate: {error_text(e)}")
    for stream in streams:
        try:
            report = calibrate_one(args, config, store, stream, len(streams) > 1)
        except (
            CalibrationDataError,
            CalibrationError,
            ArtifactError,
            DataError,
            UsageError,
            OSError,
        ) as e:
            log.error("stream %s: calibration failed: %s", stream, error_text(e))
            results[stream] = {"ok": False, "error": error_text(e)}
            continue
        results[stream] = {"ok": True, **report.model_dump(mode="json")}
        if not args.json:
            print(summary_line(report))
    return _finish(args, results, None)


def _finish(args: argparse.Namespace, results: dict[str, dict[str, Any]], error: str | None) -> int:
    ok = error is None and all(r["ok"] for r in results.values())
    if args.json:
        body: dict[str, Any] = {"ok": ok, "streams": results}
        if error:
            body["error"] = error
        print(json.dumps(body, indent=2))
    if error:
        print(error, file=sys.stderr)
        return 2
    for stream, result in results.items():
        if not result["ok"]:
            print(f"{stream}: FAILED: {result['error']}", file=sys.stderr)
    return 0 if ok else 1
