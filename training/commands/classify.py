"""`densitywatch classify`: which stream does each record come from? The posterior over
streams by Bayes' rule on each stream model's log p (density.classify.posterior).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from density.artifact import Artifact, ArtifactError, ArtifactStore
from density.classify import posterior
from training.calibrate import CalibrationDataError, encode_columns, score
from training.commands.calibrate import (
    UsageError,
    add_store_arguments,
    error_text,
    open_config,
    open_store,
    parse_assignments,
)
from training.config import ConfigError
from training.data import DataError, missing_mask, read_table


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
    p.add_argument("--out", type=Path, help="output CSV (default: stdout)")
    p.add_argument("--json", action="store_true", help="write JSON lines instead of CSV")
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
) -> tuple[np.ndarray, np.ndarray]:
    """(log p (n, S), posterior (n, S)) for records under each stream's newest model."""
    log_p = np.column_stack([stream_log_p(store.load(s), columns) for s in streams])
    return log_p, posterior(log_p, priors)


def write_results(
    streams: list[str], log_p: np.ndarray, post: np.ndarray, out: TextIO, as_json: bool
) -> None:
    best = np.asarray(streams)[post.argmax(axis=1)]
    if as_json:
        for i in range(len(post)):
            row = {
                "row": i,
                "stream": str(best[i]),
                "posterior": dict(zip(streams, post[i].tolist(), strict=True)),
                "log_p": dict(zip(streams, log_p[i].tolist(), strict=True)),
            }
            out.write(json.dumps(row) + "\n")
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
    try:
        streams = list(dict.fromkeys(args.stream))
        if len(streams) < 2:
            raise UsageError("give at least two distinct --stream")
        priors = priors_from(args.prior, streams)
        store = open_store(args, open_config(args))
        columns = read_table(args.data)
        log_p, post = classify(store, streams, columns, priors)
        if args.out is None:
            write_results(streams, log_p, post, sys.stdout, args.json)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("w", newline="", encoding="utf-8") as f:
                write_results(streams, log_p, post, f, args.json)
    except (UsageError, ConfigError, ArtifactError, DataError, CalibrationDataError, OSError) as e:
        print(f"classify: {error_text(e)}", file=sys.stderr)
        return 1
    return 0
