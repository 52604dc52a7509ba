"""`densitywatch calibrate`: set conformal thresholds on a clean hold-out, as a batch job.

No prompts; exit 0 when every stream calibrated, 1 when any failed (the others still run),
2 for bad arguments. `--json` prints one JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from densitywatch.cli.common import (
    add_json_argument,
    add_store_arguments,
    emit,
    error_text,
    open_config,
    open_store,
    parse_assignments,
)
from densitywatch.density.artifact import ArtifactStore
from densitywatch.density.calibration import DEFAULT_LEVELS, check_level_name
from densitywatch.errors import DataError, DensityWatchError, UsageError
from densitywatch.training.calibrate import calibrate_stream
from densitywatch.training.config import StreamsConfig
from densitywatch.training.data import read_table
from densitywatch.training.report import CalibrationReport

log = logging.getLogger(__name__)
DATA_SUFFIXES = (".csv", ".parquet", ".npy", ".npz")
DEFAULT_LEVEL_NAMES = ("warning", "critical")


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
    add_json_argument(p, "per-stream calibration reports")
    p.set_defaults(func=run)


def levels_from(args: argparse.Namespace) -> dict[str, float]:
    if args.fpr and args.level:
        raise UsageError("give either --fpr or --level, not both")
    if args.level:
        levels = parse_assignments(args.level, "--level")
        for name in levels:
            try:
                check_level_name(name)
            except ValueError as e:
                raise UsageError(f"--level: {e}") from None
        return levels
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
    config = open_config(args)
    store = open_store(args, config)
    levels_from(args)
    streams = streams_from(args, config, store)
    results: dict[str, dict[str, Any]] = {}
    for stream in streams:
        try:
            report = calibrate_one(args, config, store, stream, len(streams) > 1)
        except (DensityWatchError, OSError) as e:
            print(
                f"densitywatch calibrate: error: stream {stream!r}: {error_text(e)}",
                file=sys.stderr,
            )
            results[stream] = {"ok": False, "error": error_text(e)}
            continue
        results[stream] = {"ok": True, **report.model_dump(mode="json")}
        if not args.json:
            print(summary_line(report))
    if args.json:
        emit("calibrate", results, sys.stdout)
    return 0 if all(r["ok"] for r in results.values()) else 1
