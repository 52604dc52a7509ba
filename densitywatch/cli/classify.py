"""`densitywatch classify`: which stream does each record come from? The posterior over
streams by Bayes' rule on each stream model's log p (densitywatch.density.classify.posterior).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from densitywatch.cli.common import (
    add_json_argument,
    add_store_arguments,
    emit,
    open_config,
    open_store,
    parse_assignments,
)
from densitywatch.density.artifact import Artifact, ArtifactStore
from densitywatch.density.classify import posterior
from densitywatch.errors import CalibrationDataError, UsageError
from densitywatch.training.calibrate import encode_columns, score
from densitywatch.training.data import missing_mask, read_table


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "classify",
        help="posterior over streams for each record",
        description=(
            "For each record, p(stream | x) ∝ prior(stream) · p(x | stream) using each "
            "stream's newest model. Records must carry every named stream's features."
        ),
    )
    add_store_arguments(p)
    p.add_argument(
        "--stream",
        action="append",
        required=True,
        help="candidate stream (repeat for each; at least two)",
    )
    p.add_argument(
        "--prior",
        action="append",
        metavar="STREAM=WEIGHT",
        help=(
            "prior weight of a stream (repeatable; normalised; if any is given, every stream "
            "needs one; default uniform)"
        ),
    )
    p.add_argument("--data", type=Path, required=True, help="records: file or folder")
    p.add_argument("--out", type=Path, help="output file (default: stdout)")
    add_json_argument(p, "one result per record under 'records'")
    p.set_defaults(func=run)


def priors_from(items: list[str] | None, streams: list[str]) -> np.ndarray | None:
    priors = parse_assignments(items, "--prior")
    if not priors:
        return None
    unknown = sorted(set(priors) - set(streams))
    lacking = [s for s in streams if s not in priors]
    if unknown:
        raise UsageError(f"--prior names streams not given with --stream: {unknown}")
    if lacking:
        raise UsageError(f"--prior given for some streams but not for {lacking}")
    weights = np.array([priors[s] for s in streams])
    if (weights < 0).any() or weights.sum() <= 0:
        raise UsageError("priors must be non-negative with a positive sum")
    return weights


def stream_log_p(artifact: Artifact, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """log p of every record under one stream's model; every record must be complete."""
    schema = artifact.manifest.feature_schema
    for name in schema.names:
        if name in columns:
            gaps = missing_mask(np.asarray(columns[name]))
            if gaps.any():
                row = int(np.flatnonzero(gaps)[0])
                raise CalibrationDataError(
                    f"row {row}: column {name!r} (needed by stream {artifact.stream!r}) is missing"
                )
    x, _ = encode_columns(schema, columns, artifact.stream)
    return score(artifact.model, x)


def classify(
    store: ArtifactStore,
    streams: list[str],
    columns: Mapping[str, np.ndarray],
    priors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(log p (n, S), posterior (n, S), model versions) under each stream's newest model."""
    artifacts = [store.load(s) for s in streams]
    log_p = np.column_stack([stream_log_p(a, columns) for a in artifacts])
    return log_p, posterior(log_p, priors), [a.version for a in artifacts]


def write_results(
    streams: list[str],
    log_p: np.ndarray,
    post: np.ndarray,
    out: TextIO,
    versions: list[str] | None = None,
) -> None:
    """CSV, or with `versions` the one `--json` object holding every record's result."""
    best = np.asarray(streams)[post.argmax(axis=1)]
    if versions is not None:
        records = [
            {
                "row": i,
                "stream": str(best[i]),
                "posterior": dict(zip(streams, post[i].tolist(), strict=True)),
                "log_p": dict(zip(streams, log_p[i].tolist(), strict=True)),
            }
            for i in range(len(post))
        ]
        per_stream = {s: {"ok": True, "version": v} for s, v in zip(streams, versions, strict=True)}
        emit("classify", per_stream, out, records=records)
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["row", "stream", *(f"p_{s}" for s in streams), *(f"log_p_{s}" for s in streams)]
    )
    for i in range(len(post)):
        writer.writerow(
            [i, best[i], *(repr(float(v)) for v in post[i]), *(repr(float(v)) for v in log_p[i])]
        )


def run(args: argparse.Namespace) -> int:
    streams = list(dict.fromkeys(args.stream))
    if len(streams) < 2:
        raise UsageError("give at least two distinct --stream")
    priors = priors_from(args.prior, streams)
    store = open_store(args, open_config(args))
    columns = read_table(args.data)
    log_p, post, versions = classify(store, streams, columns, priors)
    shown = versions if args.json else None
    if args.out is None:
        write_results(streams, log_p, post, sys.stdout, shown)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        write_results(streams, log_p, post, f, shown)
    return 0
