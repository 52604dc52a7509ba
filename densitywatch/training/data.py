"""Reading a stream's records: CSV/TSV (optionally gzipped), Parquet, .npy, .npz, or a folder.

`read_table(path, columns)` returns the columns in order: numeric columns as float64 with
NaN for missing cells, text columns as object arrays of str with None for missing cells.

Formats:
- CSV (`.csv`, `.tsv`, `.csv.gz`, `.tsv.gz`): UTF-8, a header row of unique names. A column
  is numeric when every non-missing cell parses as a number, else text. Missing cells are
  empty or one of NA, N/A, NaN, nan, null, NULL, None. Blank lines are skipped. A row with the
  wrong number of fields is an error naming the file and line. The file is streamed: it is
  read once, and a second time only for columns that turned out to hold text. For each text
  column the reader records where its first non-numeric cell is (`Table.text_origins`), so a
  text column where numbers are needed is reported as `data.csv line 17, column 'mem':
  expected a number, got 'abc'` (Parquet and NumPy files: the row index instead of a line).
- Parquet: numeric and boolean columns become float64 (nulls NaN), string columns text
  (nulls None); only the requested columns are read.
- `.npy`: a 2-D numeric array (columns x0, x1, ...) or a structured array (its field names).
  Pickled object arrays are refused.
- `.npz`: the array under key "X", else the first array, read as `.npy`; an array under key
  "y" is the column "label", read only when asked for by name.
- A folder: every supported file in it, in name order, concatenated; all must have the same
  columns with the same kinds.

Missing values (training): a record with a missing value in any used column is dropped, and
the number dropped is reported (and recorded in the artifact). A column that is entirely
missing is an error naming it; so is dropping more than half of the records, naming the
column with the most missing values.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from densitywatch.density.schema import EncodingError, RawType, Schema
from densitywatch.errors import DataError

MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
SUFFIXES = (*CSV_SUFFIXES, ".parquet", ".pq", ".npy", ".npz")
LABEL = "label"
MAX_DROPPED_FRACTION = 0.5
_CHUNK_ROWS = 8192
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what the csv reader counts as a line


@dataclass(frozen=True)
class CellOrigin:
    """Where a text column's first non-numeric cell is: file, 0-based record, 1-based line."""

    path: Path | None
    row: int
    value: str
    line: int | None = None  # where the cell starts (CSV only)

    def location(self) -> str:
        """`data.csv line 17`, or `data.parquet row 16` where the file has no lines."""
        where = f"line {self.line}" if self.line is not None else f"row {self.row}"
        return where if self.path is None else f"{self.path} {where}"

    def not_a_number(self, column: str) -> str:
        """`data.csv line 17, column 'mem': expected a number, got 'abc'`."""
        return f"{self.location()}, column {column!r}: expected a number, got {self.value!r}"


class Table(dict[str, np.ndarray]):
    """Named columns in order, plus the origin of each text column's first non-numeric cell."""

    def __init__(
        self,
        columns: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]] = (),
        text_origins: Mapping[str, CellOrigin] | None = None,
    ) -> None:
        super().__init__(columns)
        self.text_origins: dict[str, CellOrigin] = dict(text_origins or {})


def text_origins(table: Mapping[str, np.ndarray]) -> Mapping[str, CellOrigin]:
    """The recorded text-cell origins of a table read by `read_table` (none for a plain dict)."""
    return table.text_origins if isinstance(table, Table) else {}


def text_cell_origin(table: Mapping[str, np.ndarray], column: str) -> CellOrigin | None:
    """Where `column`'s first non-numeric cell is: as recorded by the reader, else found in
    the values (row index into `table` as given, no file); None if it holds no text."""
    recorded = text_origins(table).get(column)
    return recorded if recorded is not None else first_text_cell(np.asarray(table[column]))


def first_text_cell(values: np.ndarray, path: Path | None = None) -> CellOrigin | None:
    """The first non-missing cell that is not a number (else the first non-missing one)."""
    if values.dtype.kind not in "OUS":
        return None
    fallback: CellOrigin | None = None
    for row, value in enumerate(values.tolist()):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if not _is_number(text):
            return CellOrigin(path, row, text)
        fallback = fallback or CellOrigin(path, row, text)
    return fallback


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# -- entry point --------------------------------------------------------------------------
def read_table(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Read a data file or folder; `columns` selects and orders columns (default: all)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, columns)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = _suffix(path)
    if suffix in CSV_SUFFIXES:
        return read_csv(path, columns)
    if suffix in (".parquet", ".pq"):
        return _with_origins(read_parquet(path, columns), path)
    if suffix == ".npy":
        return _with_origins(read_npy(path, columns), path)
    if suffix == ".npz":
        return _with_origins(read_npz(path, columns), path)
    raise DataError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")


def _with_origins(table: Table, path: Path) -> Table:
    for name, values in table.items():
        origin = first_text_cell(values, path)
        if origin is not None:
            table.text_origins[name] = origin
    return table


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")


def _select(available: Sequence[str], columns: Sequence[str] | None, where: str) -> list[str]:
    if columns is None:
        return list(available)
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise DataError(f"{where}: no column {unknown[0]!r} (columns: {', '.join(available)})")
    return list(columns)


# -- CSV ----------------------------------------------------------------------------------
@contextmanager
def _open_text(path: Path) -> Iterator[IO[str]]:
    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as f:
            yield f
    else:
        with path.open("r", encoding="utf-8-sig", newline="") as f:
            yield f


def _delimiter(path: Path) -> str:
    return "\t" if ".tsv" in path.name.lower() else ","


def _parse_numbers(cells: list[str]) -> list[float] | None:
    """The cells as floats (missing -> NaN), or None if any is not a number."""
    try:
        return [math.nan if c in MISSING_TOKENS else float(c) for c in cells]
    except ValueError:
        return None


def _texts(cells: list[str]) -> list[str | None]:
    return [None if c in MISSING_TOKENS else c for c in cells]


def _header(reader: Any, path: Path) -> list[str]:
    for row in reader:
        if row:
            names = [name.strip() for name in row]
            for j, name in enumerate(names):
                if not name:
                    raise DataError(f"{path} line {reader.line_num}: column {j + 1} has no name")
                if names.index(name) != j:
                    raise DataError(f"{path} line {reader.line_num}: duplicate column {name!r}")
            return names
    raise DataError(f"{path}: empty file (no header row)")


def _csv_chunks(reader: Any, path: Path, width: int) -> Iterator[tuple[list[list[str]], list[int]]]:
    """Rows in chunks with the line each row starts on, checking each row's field count."""
    chunk: list[list[str]] = []
    starts: list[int] = []
    end = reader.line_num
    for row in reader:
        start, end = end + 1, reader.line_num
        if not row:
            continue
        if len(row) != width:
            raise DataError(f"{path} line {end}: expected {width} fields, got {len(row)}")
        chunk.append(row)
        starts.append(start)
        if len(chunk) == _CHUNK_ROWS:
            yield chunk, starts
            chunk, starts = [], []
    if chunk:
        yield chunk, starts


def _csv_text_origin(
    path: Path, chunk: list[list[str]], starts: list[int], j: int, first_row: int
) -> CellOrigin:
    """The first non-numeric cell of field j in a chunk; its line counts the line breaks
    inside the record's earlier (quoted) fields."""
    for i, row in enumerate(chunk):
        cell = row[j]
        if cell not in MISSING_TOKENS and not _is_number(cell):
            line = starts[i] + sum(len(_LINE_BREAK.findall(field)) for field in row[:j])
            return CellOrigin(path, first_row + i, cell, line)
    raise AssertionError("the chunk was parsed as numbers")  # pragma: no cover


@contextmanager
def _csv_errors(path: Path, reader_box: list[Any]) -> Iterator[None]:
    try:
        yield
    except csv.Error as e:
        line = reader_box[0].line_num if reader_box else "?"
        raise DataError(f"{path} line {line}: malformed CSV: {e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}): {e.reason}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def read_csv(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Read a CSV/TSV file with a header (see the module docstring for the rules)."""
    path = Path(path)
    box: list[Any] = []
    with _csv_errors(path, box), _open_text(path) as f:
        reader = csv.reader(f, delimiter=_delimiter(path), strict=True)
        box.append(reader)
        header = _header(reader, path)
        names = _select(header, columns, str(path))
        index = {name: header.index(name) for name in names}
        numbers: dict[str, array[float]] = {name: array("d") for name in names}
        origins: dict[str, CellOrigin] = {}
        n_rows = 0
        for chunk, starts in _csv_chunks(reader, path, len(header)):
            for name in list(numbers):
                parsed = _parse_numbers([row[index[name]] for row in chunk])
                if parsed is None:
                    del numbers[name]  # text: read again below
                    origins[name] = _csv_text_origin(path, chunk, starts, index[name], n_rows)
                else:
                    numbers[name].extend(parsed)
            n_rows += len(chunk)
    if n_rows == 0:
        raise DataError(f"{path}: has a header but no data rows")
    texts = _read_text_columns(path, [n for n in names if n not in numbers], index, len(header))
    return Table(
        (
            (
                name,
                np.frombuffer(numbers[name], dtype=np.float64) if name in numbers else texts[name],
            )
            for name in names
        ),
        text_origins=origins,
    )


def _read_text_columns(
    path: Path, names: list[str], index: Mapping[str, int], width: int
) -> dict[str, np.ndarray]:
    if not names:
        return {}
    values: dict[str, list[str | None]] = {name: [] for name in names}
    box: list[Any] = []
    with _csv_errors(path, box), _open_text(path) as f:
        reader = csv.reader(f, delimiter=_delimiter(path), strict=True)
        box.append(reader)
        _header(reader, path)
        for chunk, _ in _csv_chunks(reader, path, width):
            for name in names:
                values[name].extend(_texts([row[index[name]] for row in chunk]))
    return {name: _object_array(v) for name, v in values.items()}


def _object_array(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# -- Parquet ------------------------------------------------------------------------------
def read_parquet(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Read a Parquet file one column at a time (only the requested columns)."""
    path = Path(path)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the dev and parquet extras
        raise DataError(
            f"{path}: reading Parquet needs pyarrow (pip install 'densitywatch[parquet]')"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
        names = _select(parquet.schema_arrow.names, columns, str(path))
        if parquet.metadata.num_rows == 0:
            raise DataError(f"{path}: no rows")
        return Table(
            (name, _arrow_column(parquet.read(columns=[name]).column(0), name, path, pa))
            for name in names
        )
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read Parquet: {e}") from None


def _arrow_column(column: Any, name: str, path: Path, pa: Any) -> np.ndarray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = column.type
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or (pa.types.is_decimal(kind))
    ):
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(values, dtype=np.float64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _object_array(column.to_pylist())
    raise DataError(f"{path}: column {name!r} has unsupported type {kind}")


# -- NumPy --------------------------------------------------------------------------------
def read_npy(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Read a 2-D (or structured) array from a .npy file, memory-mapped."""
    path = Path(path)
    try:
        array_ = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: not a plain numeric .npy array (pickle refused): {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    return _array_table(array_, columns, str(path))


def read_npz(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Read the array "X" (or the first one) of a .npz file, and "y" as "label" if asked."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if not keys:
                raise DataError(f"{path}: no arrays")
            key = "X" if "X" in keys else keys[0]
            has_label = "y" in keys and key != "y"
            wanted = list(columns) if columns is not None else None
            label_wanted = has_label and wanted is not None and LABEL in wanted
            if label_wanted and wanted is not None:
                wanted.remove(LABEL)
            table = _array_table(archive[key], wanted, f"{path}[{key}]")
            if label_wanted:
                table = _with_label(table, archive["y"], columns or [], path)
            return table
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a plain numeric .npz archive (pickle refused): {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _with_label(table: Table, y: np.ndarray, order: Sequence[str], path: Path) -> Table:
    n = len(next(iter(table.values()))) if table else len(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{path}: 'y' has shape {y.shape}, expected ({n},)")
    table[LABEL] = _column(np.asarray(y))
    return Table((name, table[name]) for name in order)


def _column(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "US":
        return _object_array([str(v) for v in values.tolist()])
    if values.dtype.kind in "biuf":
        return np.array(values, dtype=np.float64)  # a copy: detached from any memory map
    raise ValueError(f"unsupported dtype {values.dtype}")


def _array_table(values: np.ndarray, columns: Sequence[str] | None, where: str) -> Table:
    try:
        if values.dtype.names:
            names = _select(list(values.dtype.names), columns, where)
            table = Table((name, _column(values[name])) for name in names)
        else:
            if values.ndim != 2:
                raise DataError(f"{where}: expected a 2-D array, got shape {values.shape}")
            available = [f"x{j}" for j in range(values.shape[1])]
            names = _select(available, columns, where)
            table = Table((name, _column(values[:, available.index(name)])) for name in names)
    except DataError:
        raise
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None
    if not table or len(next(iter(table.values()))) == 0:
        raise DataError(f"{where}: no rows")
    return table


# -- folders ------------------------------------------------------------------------------
def data_files(folder: Path) -> list[Path]:
    """The supported, non-hidden files of a folder, in name order."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and _suffix(p)
    )


def _read_folder(folder: Path, columns: Sequence[str] | None) -> Table:
    files = data_files(folder)
    if not files:
        raise DataError(f"{folder}: no data files ({', '.join(SUFFIXES)})")
    parts = [read_table(files[0], columns)]
    names = list(parts[0])
    for path in files[1:]:
        part = read_table(path, columns)
        if list(part) != names:
            raise DataError(f"{path}: columns {list(part)} differ from {files[0].name}'s {names}")
        for name in names:
            if _is_text(part[name]) != _is_text(parts[0][name]):
                kinds = ("text", "numeric") if _is_text(part[name]) else ("numeric", "text")
                raise DataError(
                    f"{path}: column {name!r} is {kinds[0]} but {kinds[1]} in {files[0].name}"
                )
        parts.append(part)
    table = Table()
    for part in parts:  # a text column's first text cell is in the first file
        for name, origin in part.text_origins.items():
            table.text_origins.setdefault(name, origin)
    for name in names:  # one column at a time, releasing the parts as they are used
        pieces = [part.pop(name) for part in parts]
        table[name] = np.concatenate(pieces)
        del pieces
    return table


def _is_text(values: np.ndarray) -> bool:
    return values.dtype == object


# -- missing values -----------------------------------------------------------------------
def missing_mask(values: np.ndarray) -> np.ndarray:
    """True where a value is missing (NaN, or None in a text column)."""
    if _is_text(values):
        return np.fromiter(
            (v is None or (isinstance(v, float) and math.isnan(v)) for v in values),
            dtype=bool,
            count=len(values),
        )
    return np.isnan(values)


@dataclass
class MissingReport:
    """What `drop_missing` removed."""

    n_records: int
    n_dropped: int
    per_column: dict[str, int] = field(default_factory=dict)


def drop_missing(
    table: Mapping[str, np.ndarray],
    where: str = "data",
    max_fraction: float = MAX_DROPPED_FRACTION,
) -> tuple[Table, np.ndarray, MissingReport]:
    """Drop records with any missing value; returns (table, kept mask, report).

    Raises DataError naming the column if a column is entirely missing, or if more than
    `max_fraction` of the records would be dropped (naming the worst column).
    """
    n = len(next(iter(table.values()))) if table else 0
    keep = np.ones(n, dtype=bool)
    per_column: dict[str, int] = {}
    for name, values in table.items():
        missing = missing_mask(values)
        per_column[name] = int(missing.sum())
        if n and per_column[name] == n:
            raise DataError(f"{where}: column {name!r} is entirely missing")
        keep &= ~missing
    n_dropped = int(n - keep.sum())
    if n and n_dropped > max_fraction * n:
        worst = max(per_column, key=lambda c: per_column[c])
        raise DataError(
            f"{where}: {n_dropped} of {n} records have missing values (more than "
            f"{max_fraction:.0%}); column {worst!r} alone is missing in {per_column[worst]}"
        )
    report = MissingReport(n_records=n, n_dropped=n_dropped, per_column=per_column)
    origins = text_origins(table)  # still the cells' places in the file
    if n_dropped == 0:
        return Table(table, origins), keep, report
    return Table(((name, values[keep]) for name, values in table.items()), origins), keep, report


# -- encoding -----------------------------------------------------------------------------
def encode_table(schema: Schema, table: Mapping[str, np.ndarray], chunk: int = 65536) -> np.ndarray:
    """Encode named columns (no missing values) with a schema, in chunks to bound memory."""
    for f in schema.features:
        if f.name not in table:
            raise DataError(f"data has no column {f.name!r} (needed by the schema)")
        if _is_text(table[f.name]) != (f.raw_type == RawType.STRING):
            want = "text" if f.raw_type == RawType.STRING else "numbers"
            raise DataError(f"column {f.name!r} does not hold {want} as the schema expects")
    n = len(table[schema.names[0]])
    numbers = [table[f.name] for f in schema.number_features]
    strings = [table[f.name] for f in schema.string_features]
    out = np.empty((n, len(schema.features)), dtype=np.float64)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        num = np.empty((stop - start, len(numbers)))
        for j, column in enumerate(numbers):
            num[:, j] = column[start:stop]
        rows = [list(row) for row in zip(*(c[start:stop] for c in strings), strict=True)]
        try:
            out[start:stop] = schema.encode(num, rows if strings else None)
        except EncodingError as e:
            index = None if e.index is None else start + e.index
            message = (
                str(e)
                if e.index is None
                else str(e).replace(f"point {e.index}:", f"record {index}:", 1)
            )
            raise DataError(message) from None
    return out
