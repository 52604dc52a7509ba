"""`densitywatch sample`: draw records from a stream's model, as CSV (header = features)."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tqdm.auto import tqdm

from densitywatch.cli.common import (
    add_json_argument,
    add_store_arguments,
    emit,
    open_config,
    open_store,
)
from densitywatch.density.artifact import Artifact
from densitywatch.density.schema import FeatureKind, RawType, Schema
from densitywatch.errors import UsageError

SAMPLE_CHUNK = 10_000
MAX_SAMPLES = 10_000_000


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw synthetic records from a stream's model (CSV)",
        description="Sample records from a stream's newest model; CSV with a header row.",
    )
    add_store_arguments(p)
    p.add_argument("--stream", required=True, help="stream whose model to sample")
    p.add_argument("--version", help="model version (default: newest)")
    p.add_argument("-n", type=int, default=1000, help="number of records (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", type=Path, help="output file (default: stdout)")
    add_json_argument(p, "the records under 'records'")
    p.set_defaults(func=run)


def sample_encoded(
    artifact: Artifact, n: int, seed: int, show_progress: bool | None = None
) -> np.ndarray:
    """n encoded records from the artifact's model, reproducible for a seed."""
    generator = torch.Generator().manual_seed(seed)
    model = artifact.model.eval()
    chunks = []
    with torch.inference_mode():
        for start in tqdm(
            range(0, n, SAMPLE_CHUNK),
            desc="sample",
            unit="chunk",
            disable=None if show_progress is None else not show_progress,
        ):
            size = min(SAMPLE_CHUNK, n - start)
            chunks.append(model.sample(size, generator).numpy())
    return np.concatenate(chunks) if chunks else np.empty((0, model.n_features))


def _format_number(value: float, kind: FeatureKind) -> str:
    if kind != FeatureKind.CONTINUOUS and float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def decoded_rows(schema: Schema, x: np.ndarray) -> Iterator[list[str]]:
    """CSV cells per record in feature order, via Schema.decode."""
    numbers, strings = schema.decode(x)
    for i in range(len(x)):
        num_i = str_i = 0
        row = []
        for feature in schema.features:
            if feature.raw_type == RawType.NUMBER:
                row.append(_format_number(numbers[i, num_i], feature.kind))
                num_i += 1
            else:
                row.append(strings[i][str_i])
                str_i += 1
        yield row


def write_csv(schema: Schema, x: np.ndarray, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(schema.names)
    writer.writerows(decoded_rows(schema, x))


def write_records(artifact: Artifact, x: np.ndarray, out: TextIO, as_json: bool) -> None:
    schema = artifact.manifest.feature_schema
    if not as_json:
        write_csv(schema, x, out)
        return
    records = [dict(zip(schema.names, row, strict=True)) for row in decoded_rows(schema, x)]
    streams = {artifact.stream: {"ok": True, "version": artifact.version, "n": len(records)}}
    emit("sample", streams, out, records=records)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.n <= MAX_SAMPLES:
        raise UsageError(f"-n must be between 1 and {MAX_SAMPLES}, got {args.n}")
    store = open_store(args, open_config(args))
    artifact = store.load(args.stream, args.version)
    x = sample_encoded(artifact, args.n, args.seed)
    if args.out is None:
        write_records(artifact, x, sys.stdout, args.json)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        write_records(artifact, x, f, args.json)
    tmp.replace(args.out)
    return 0
