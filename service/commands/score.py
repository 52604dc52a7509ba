"""`densitywatch score`: stream a file through a running service (ScoreStream) in chunks
and write the scores as CSV. Reads CSV (header row), .npy and .npz without training/."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from densitywatch.client import Client, ScoreResult
from service.errors import DensityWatchError

log = logging.getLogger(__name__)

Chunk = tuple[np.ndarray, list[list[str]]]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a file through a running service",
        description="Stream a CSV/.npy/.npz file through ScoreStream and write the scores (CSV).",
    )
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument("--data", required=True, type=Path, help="CSV with header, .npy or .npz")
    p.add_argument("--out", type=Path, help="output CSV (default: standard output)")
    p.add_argument("--target", default="localhost:50051", help="service host:port")
    p.add_argument("--chunk-size", type=int, default=1000, help="points per request")
    p.add_argument("--explain", action="store_true", help="add the top features per point")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole file")
    p.set_defaults(func=run)


class InputError(ValueError):
    """The data file cannot be read or does not match the stream's schema."""


def read_chunks(
    path: Path, number_names: list[str], string_names: list[str], size: int
) -> Iterator[Chunk]:
    """Chunks of (numbers, string rows) in the stream's feature order."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        yield from _array_chunks(_read_array(path), number_names, string_names, size)
    elif suffix in (".csv", ".txt", ""):
        yield from _csv_chunks(path, number_names, string_names, size)
    else:
        raise InputError(f"{path}: unsupported format {suffix!r} (use .csv, .npy or .npz)")


def _read_array(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read: {e}") from e
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            key = "X" if "X" in loaded.files else loaded.files[0]
            return np.asarray(loaded[key])
    return np.asarray(loaded)


def _array_chunks(
    x: np.ndarray, number_names: list[str], string_names: list[str], size: int
) -> Iterator[Chunk]:
    if string_names:
        raise InputError("the stream has string features: give a CSV with a header")
    if x.ndim != 2 or x.shape[1] != len(number_names):
        raise InputError(
            f"array of shape {x.shape}; the stream needs (n, {len(number_names)}) "
            f"columns {number_names}"
        )
    x = x.astype(np.float64)
    for start in range(0, len(x), size):
        chunk = x[start : start + size]
        yield chunk, [[] for _ in range(len(chunk))]


def _csv_chunks(
    path: Path, number_names: list[str], string_names: list[str], size: int
) -> Iterator[Chunk]:
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path} is empty")
        missing = [n for n in number_names + string_names if n not in header]
        if missing:
            raise InputError(f"{path}: columns {missing} missing (header: {header})")
        num_idx = [header.index(n) for n in number_names]
        str_idx = [header.index(n) for n in string_names]
        rows: list[list[str]] = []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise InputError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            rows.append(row)
            if len(rows) == size:
                yield _parse(rows, num_idx, str_idx, number_names, path, line - size + 1)
                rows = []
        if rows:
            yield _parse(rows, num_idx, str_idx, number_names, path, line - len(rows) + 1)


def _parse(
    rows: list[list[str]],
    num_idx: list[int],
    str_idx: list[int],
    number_names: list[str],
    path: Path,
    first_line: int,
) -> Chunk:
    numbers = np.empty((len(rows), len(num_idx)), dtype=np.float64)
    for i, row in enumerate(rows):
        for k, j in enumerate(num_idx):
            try:
                numbers[i, k] = float(row[j]) if row[j].strip() else math.nan
            except ValueError:
                raise InputError(
                    f"{path}:{first_line + i}: column {number_names[k]!r} is not a number: "
                    f"{row[j]!r}"
                ) from None
    return numbers, [[row[j] for j in str_idx] for row in rows]


def write_scores(out: TextIO, results: Iterator[ScoreResult], explain: bool) -> int:
    writer = csv.writer(out)
    header = ["row", "log_prob", "p_value", "level", "model_version"]
    writer.writerow([*header, "top_features"] if explain else header)
    row = 0
    for result in results:
        tops = result.top_features or [[] for _ in result.level]
        for lp, pv, level, top in zip(
            result.log_prob.tolist(), result.p_value.tolist(), result.level, tops, strict=True
        ):
            line = [row, repr(lp), repr(pv), level, result.model_version]
            writer.writerow([*line, ";".join(top)] if explain else line)
            row += 1
    return row


def run(args: argparse.Namespace) -> int:
    if args.chunk_size < 1:
        log.error("--chunk-size must be at least 1")
        return 2
    try:
        with Client(args.target, timeout=args.timeout) as client:
            number_names, string_names = client.layout(args.stream)
            chunks = read_chunks(args.data, number_names, string_names, args.chunk_size)
            results = client.score_stream(args.stream, chunks, explain=args.explain)
            out = args.out.open("w", newline="") if args.out else sys.stdout
            try:
                n = write_scores(out, results, args.explain)
            finally:
                out.flush()
                if args.out:
                    out.close()
    except (InputError, DensityWatchError, OSError) as e:
        log.error("%s", e)
        return 1
    log.info("scored %d points of %s", n, args.data)
    return 0
