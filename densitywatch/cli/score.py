"""`densitywatch score`: stream a file through a running service (ScoreStream) in chunks
and write the scores as CSV. The file is read by the same reader as `train` and
`calibrate` (CSV/TSV, gzipped or not, Parquet, .npy, .npz, a folder), which loads neither
torch nor scikit-learn."""

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
from densitywatch.errors import DataError, UsageError
from densitywatch.training.data import Table, read_table, text_cell_origin

log = logging.getLogger(__name__)

Chunk = tuple[np.ndarray, list[list[str]]]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "score",
        help="score a file through a running service",
        description="Stream a records file through ScoreStream and write the scores (CSV).",
    )
    p.add_argument("--stream", required=True, help="stream name")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="records: CSV/TSV (.gz), Parquet, .npy, .npz or a folder",
    )
    p.add_argument("--out", type=Path, help="output CSV (default: standard output)")
    p.add_argument("--target", default="localhost:50051", help="service host:port")
    p.add_argument("--chunk-size", type=int, default=1000, help="points per request")
    p.add_argument("--explain", action="store_true", help="add the top features per point")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole file")
    p.set_defaults(func=run)


def read_points(
    path: Path, number_names: list[str], string_names: list[str]
) -> tuple[np.ndarray, list[list[str]]]:
    """The file's records in the stream's feature order, read by the one record reader.

    Columns are matched by name; a plain numeric array (columns x0, x1, ...) is matched by
    position when the stream has only number features.
    """
    table = read_table(path)
    if path.suffix.lower() in (".npy", ".npz"):
        table = _by_position(table, number_names, string_names, path)
    missing = [n for n in number_names + string_names if n not in table]
    if missing:
        raise DataError(f"{path}: columns {missing} missing (has: {list(table)})")
    n_rows = len(next(iter(table.values())))
    numbers = np.empty((n_rows, len(number_names)))
    for k, name in enumerate(number_names):
        numbers[:, k] = _numbers(table, name, path)
    strings = [_strings(table[name]) for name in string_names]
    return numbers, [list(row) for row in zip(*strings, strict=True)] or [[]] * n_rows


def _by_position(
    table: Table, number_names: list[str], string_names: list[str], path: Path
) -> Table:
    """A plain array's columns x0, x1, ... taken as the stream's features, in order."""
    if list(table) != [f"x{i}" for i in range(len(table))]:
        return table  # a structured array: its field names are matched by name
    if string_names or len(table) != len(number_names):
        raise DataError(
            f"{path}: an array of {len(table)} columns; the stream needs {len(number_names)} "
            f"number columns {number_names}"
            + (f" and string columns {string_names} (give a CSV)" if string_names else "")
        )
    return Table(zip(number_names, table.values(), strict=True))


def _numbers(table: Table, name: str, path: Path) -> np.ndarray:
    values = table[name]
    if values.dtype == object:
        origin = text_cell_origin(table, name)
        where = origin.not_a_number(name) if origin else f"{path}: column {name!r}"
        raise DataError(f"{where} (the stream needs numbers there)")
    return values.astype(np.float64)


def _strings(values: np.ndarray) -> list[str]:
    if values.dtype == object:
        return ["" if v is None else str(v) for v in values]
    return [
        "" if math.isnan(v) else (str(int(v)) if v.is_integer() else repr(v))
        for v in values.tolist()
    ]


def chunks_of(numbers: np.ndarray, strings: list[list[str]], size: int) -> Iterator[Chunk]:
    for start in range(0, len(numbers), size):
        yield numbers[start : start + size], strings[start : start + size]


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
        raise UsageError("--chunk-size must be at least 1")
    with Client(args.target, timeout=args.timeout) as client:
        number_names, string_names = client.layout(args.stream)
        numbers, strings = read_points(args.data, number_names, string_names)
        chunks = chunks_of(numbers, strings, args.chunk_size)
        results = client.score_stream(args.stream, chunks, explain=args.explain)
        out = args.out.open("w", newline="") if args.out else sys.stdout
        try:
            n = write_scores(out, results, args.explain)
        finally:
            out.flush()
            if args.out:
                out.close()
    log.info("scored %d points of %s", n, args.data)
    return 0
