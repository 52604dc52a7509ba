"""`densitywatch train`: fit one density model per stream and write it to the store.

Per stream: read the source, drop records with missing values, infer the schema (with the
config's type overrides), encode, fit (capacity chosen by validation NLL), and write a new
artifact version. Streams are trained one after another; a failing stream is reported on
one line and the others still run, and the exit status is non-zero if any failed. Nothing is
written for a failed stream (the store writes each version atomically).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from densitywatch.cli.common import (
    add_config_argument,
    add_json_argument,
    emit,
    error_text,
    require_config,
)
from densitywatch.density.artifact import ArtifactStore, TrainingInfo, fingerprint
from densitywatch.density.schema import Schema
from densitywatch.errors import DataError, DensityWatchError, UsageError
from densitywatch.training.config import StreamConfig, StreamsConfig
from densitywatch.training.data import (
    MissingReport,
    Table,
    drop_missing,
    encode_table,
    read_table,
)
from densitywatch.training.fit import FitConfig, FitResult, fit
from densitywatch.training.schema import InferenceOptions, infer_schema

logger = logging.getLogger(__name__)

MIN_RECORDS = 10
SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"
SHARD_COUNT_ENV = "DENSITYWATCH_SHARD_COUNT"


@dataclass(frozen=True)
class TrainOptions:
    """What the command line sets for every stream."""

    seed: int = 0
    device: str = "cpu"
    max_steps: int | None = None
    refit: bool = True
    quiet: bool = False


@dataclass
class StreamSummary:
    """The outcome for one stream (one line of text, or one JSON object)."""

    stream: str
    status: str
    error: str | None = None
    version: str | None = None
    path: str | None = None
    val_nll: float | None = None
    train_nll: float | None = None
    n_rows: int | None = None
    n_dropped_missing: int | None = None
    duration_s: float | None = None

    def line(self) -> str:
        if self.status != "ok":
            return f"{self.stream}: FAILED: {self.error}"
        dropped = ""
        if self.n_dropped_missing:
            dropped = f" ({self.n_dropped_missing} dropped: missing values)"
        return (
            f"{self.stream}: val NLL {self.val_nll:.3f} nats/point (train {self.train_nll:.3f}), "
            f"{self.duration_s:.1f} s, {self.n_rows} rows{dropped} -> {self.path}"
        )


# -- arguments ----------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """'k/N' -> (k, N) with 0 <= k < N."""
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard {text!r} is not of the form k/N") from None
    if n < 1 or not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard {text!r} needs 0 <= k < N")
    return k, n


def shard_from_env(count: int | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """(index, total) for a Kubernetes Indexed Job: index from JOB_COMPLETION_INDEX."""
    env = dict(os.environ) if env is None else env
    if SHARD_INDEX_ENV not in env:
        raise UsageError(f"--shard-from-env: environment variable {SHARD_INDEX_ENV} is not set")
    if count is None:
        if SHARD_COUNT_ENV not in env:
            raise UsageError(f"--shard-from-env needs --shard-count or {SHARD_COUNT_ENV}")
        count_text = env[SHARD_COUNT_ENV]
    else:
        count_text = str(count)
    try:
        return parse_shard(f"{env[SHARD_INDEX_ENV]}/{count_text}")
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--shard-from-env: {e}") from None


def select_streams(
    config: StreamsConfig, wanted: list[str] | None, shard: tuple[int, int] | None
) -> list[str]:
    """Stream names to train: the sorted config streams, filtered by --stream and --shard.

    A stream's shard is its index among *all* configured streams (sorted), so that the
    assignment does not depend on --stream.
    """
    names = config.sorted_names()
    unknown = sorted(set(wanted or []) - set(names))
    if unknown:
        raise UsageError(f"no stream {unknown[0]!r} in the config (streams: {', '.join(names)})")
    if shard is not None:
        k, n = shard
        names = [name for i, name in enumerate(names) if i % n == k]
    if wanted:
        names = [name for name in names if name in wanted]
    return names


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fit a density model per stream and write it to the store",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(parser)
    parser.add_argument(
        "--stream",
        action="append",
        metavar="NAME",
        help="train this stream (repeatable; default: all)",
    )
    shard = parser.add_mutually_exclusive_group()
    shard.add_argument(
        "--shard",
        type=parse_shard,
        metavar="k/N",
        help="train only streams whose index in sorted order %% N == k",
    )
    shard.add_argument(
        "--shard-from-env",
        action="store_true",
        help=f"take k from ${SHARD_INDEX_ENV} (Kubernetes Indexed Job)",
    )
    parser.add_argument(
        "--shard-count",
        type=int,
        metavar="N",
        help=f"N for --shard-from-env (default: ${SHARD_COUNT_ENV})",
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="training device (default: cpu)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--max-steps", type=int, metavar="N", help="cap on gradient steps per capacity candidate"
    )
    parser.add_argument(
        "--no-refit",
        action="store_true",
        help="keep the selected candidate as trained on the training split, instead of "
        "retraining it on training + validation (faster, uses less data)",
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's choice)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    add_json_argument(parser, "per-stream training summaries")
    parser.set_defaults(func=run)


# -- training -----------------------------------------------------------------------------
def load_features(stream: StreamConfig) -> tuple[Table, MissingReport]:
    """The stream's feature columns, with records that miss any value dropped (the table
    keeps where each text column's first text cell is, for errors naming file and line)."""
    table = read_table(stream.source, stream.columns)
    if stream.columns is None and stream.label_column is not None:
        table.pop(stream.label_column, None)
    if not table:
        raise DataError(f"{stream.source}: no feature columns")
    table, _, report = drop_missing(table, where=str(stream.source))
    n_kept = report.n_records - report.n_dropped
    if n_kept < MIN_RECORDS:
        raise DataError(f"{stream.source}: {n_kept} usable records; at least {MIN_RECORDS} needed")
    return table, report


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _training_info(
    stream: StreamConfig,
    result: FitResult,
    fit_config: FitConfig,
    options: InferenceOptions,
    report: MissingReport,
    data_fingerprint: str,
) -> TrainingInfo:
    return result.training_info(
        data_fingerprint,
        seed=fit_config.seed,
        n_dropped_missing=report.n_dropped,
        device=fit_config.device,
        source=str(stream.source),
        hyperparameters={
            "fit": fit_config.model_dump(mode="json", exclude={"show_progress"}),
            "capacity": result.capacity.model_dump(mode="json"),
            "schema_inference": options.model_dump(mode="json"),
            "type_overrides": {k: v.value for k, v in stream.types.items()},
        },
    )


def train_stream(
    stream: StreamConfig, store: ArtifactStore, options: TrainOptions
) -> StreamSummary:
    """Train one stream and write its artifact; raises on bad data (nothing written)."""
    start = time.perf_counter()
    table, report = load_features(stream)
    if report.n_dropped and not options.quiet:
        logger.info(
            "%s: dropped %d of %d records with missing values",
            stream.name,
            report.n_dropped,
            report.n_records,
        )
    inference = InferenceOptions()
    schema: Schema = infer_schema(table, overrides=stream.types, options=inference)
    x = encode_table(schema, table)
    del table
    fit_config = FitConfig(
        seed=options.seed,
        device=options.device,
        refit=options.refit,
        show_progress=not options.quiet,
    )
    if options.max_steps is not None:
        fit_config = fit_config.model_copy(update={"max_steps": options.max_steps})
    result = fit(schema, x, fit_config, description=stream.name)
    info = _training_info(stream, result, fit_config, inference, report, fingerprint(x))
    artifact = store.write(result.model, result.manifest(stream.name, info))
    return StreamSummary(
        stream=stream.name,
        status="ok",
        version=artifact.version,
        path=_display(artifact.path),
        val_nll=result.val_nll,
        train_nll=result.train_nll,
        n_rows=result.n_train + result.n_val,
        n_dropped_missing=report.n_dropped,
        duration_s=time.perf_counter() - start,
    )


def _resolve(args: argparse.Namespace) -> tuple[StreamsConfig, list[str], TrainOptions]:
    if args.shard_count is not None and not args.shard_from_env:
        raise UsageError("--shard-count is only used with --shard-from-env")
    if args.max_steps is not None and args.max_steps < 1:
        raise UsageError("--max-steps must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    shard = shard_from_env(args.shard_count) if args.shard_from_env else args.shard
    config = require_config(args)
    names = select_streams(config, args.stream, shard)
    options = TrainOptions(
        seed=args.seed,
        device=args.device,
        max_steps=args.max_steps,
        refit=not args.no_refit,
        quiet=args.quiet,
    )
    return config, names, options


def run(args: argparse.Namespace) -> int:
    config, names, options = _resolve(args)
    if not names and not args.quiet:
        print("densitywatch train: no streams to train in this shard", file=sys.stderr)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    store = ArtifactStore(config.store)
    summaries: list[StreamSummary] = []
    for name in names:
        try:
            summary = train_stream(config.streams[name], store, options)
        except (DensityWatchError, OSError) as e:
            summary = StreamSummary(stream=name, status="error", error=error_text(e))
            print(f"densitywatch train: error: stream {name!r}: {e}", file=sys.stderr)
        summaries.append(summary)
        if not args.json and summary.status == "ok":
            print(summary.line(), flush=True)
    if args.json:
        streams = {s.stream: {"ok": s.status == "ok", **asdict(s)} for s in summaries}
        emit("train", streams, sys.stdout)
    return 1 if any(s.status != "ok" for s in summaries) else 0
