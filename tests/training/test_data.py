"""Data readers (CSV, Parquet, .npy, .npz, folders), the missing-values rule, and encoding."""

from __future__ import annotations

import csv
import gzip
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import densitywatch.training.data
from densitywatch.density.schema import FeatureKind
from densitywatch.training.data import (
    CellOrigin,
    DataError,
    drop_missing,
    encode_table,
    missing_mask,
    read_table,
    text_cell_origin,
)
from densitywatch.training.schema import SchemaError, infer_schema

# -- random tables ------------------------------------------------------------------------
NUMBER = st.one_of(
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**6), 10**6).map(float),
)
# "s" + anything: never a number nor a missing token; includes commas, quotes, newlines.
TEXT = st.one_of(st.none(), st.text(max_size=6).map(lambda s: "s" + s))


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[bool], list[list[Any]]]:
    """(names, is_text per column, rows) with None for a missing cell."""
    width = draw(st.integers(1, 5))
    n = draw(st.integers(1, 12))
    names = [f"c{j}" for j in range(width)]
    is_text = [draw(st.booleans()) for _ in range(width)]
    columns = [draw(st.lists(TEXT if t else NUMBER, min_size=n, max_size=n)) for t in is_text]
    rows = [list(r) for r in zip(*columns, strict=True)]
    return names, is_text, rows


def assert_column(values: np.ndarray, expected: list[Any], is_text: bool) -> None:
    assert len(values) == len(expected)
    if is_text:
        assert values.dtype == object
        assert values.tolist() == expected
    else:
        assert values.dtype == np.float64
        want = np.array([math.nan if v is None else v for v in expected], dtype=np.float64)
        np.testing.assert_array_equal(values, want)  # NaN == NaN here


def write_rows(path: Path, names: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


# -- CSV ----------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(table=tables())
def test_csv_round_trip(table: tuple[list[str], list[bool], list[list[Any]]]) -> None:
    names, is_text, rows = table
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        write_rows(path, names, rows)
        read = read_table(path)
    assert list(read) == names
    for j, name in enumerate(names):
        column = [row[j] for row in rows]
        all_missing_text = is_text[j] and all(v is None for v in column)
        # an all-missing column has no text to show it is text: it reads as numeric NaN
        assert_column(read[name], column, is_text[j] and not all_missing_text)
        assert missing_mask(read[name]).tolist() == [v is None for v in column]


@settings(max_examples=60, deadline=None)
@given(table=tables(), data=st.data())
def test_csv_row_with_wrong_field_count_names_the_line(
    table: tuple[list[str], list[bool], list[list[Any]]], data: st.DataObject
) -> None:
    names, _, rows = table
    bad = data.draw(st.integers(0, len(rows) - 1))
    width = data.draw(st.integers(1, len(names) + 3).filter(lambda w: w != len(names)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(names)
            for i in range(len(rows)):
                writer.writerow([f"{i}.5"] * (width if i == bad else len(names)))
        with pytest.raises(DataError) as info:
            read_table(path)
    assert str(info.value) == (f"{path} line {bad + 2}: expected {len(names)} fields, got {width}")


def test_truncated_last_row_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    lines = ["a,b,c,d,e"] + [f"{i},{i},{i},{i},{i}" for i in range(15)] + ["1,2,3"]
    path.write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"data.csv line 17: expected 5 fields, got 3$"):
        read_table(path)


def test_csv_missing_tokens_projection_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(" a , b ,c\n1,x,NA\n\n2,,null\nnan,N/A,3\n")
    table = read_table(path, ["c", "a"])
    assert list(table) == ["c", "a"]
    np.testing.assert_array_equal(table["c"], [np.nan, np.nan, 3.0])
    np.testing.assert_array_equal(table["a"], [1.0, 2.0, np.nan])
    assert read_table(path)["b"].tolist() == ["x", None, None]


def test_csv_text_column_keeps_its_original_spelling(tmp_path: Path) -> None:
    # numbers in the first rows, text later: the column is text and keeps "1.50" as written
    rows = [["1.50"]] * 9000 + [["abc"]]
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["v"], *rows])
    values = read_table(path)["v"]
    assert values.dtype == object
    assert values[0] == "1.50" and values[-1] == "abc" and len(values) == 9001


def test_tsv_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "t.tsv").write_text("a\tb\n1\tx y\n")
    assert read_table(tmp_path / "t.tsv")["b"].tolist() == ["x y"]
    with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
        f.write("a,b\n1,2\n3,4\n")
    np.testing.assert_array_equal(read_table(tmp_path / "t.csv.gz")["b"], [2.0, 4.0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\n\n", "empty file"),
        (b"a,b\n", "has a header but no data rows"),
        (b"a,a\n1,2\n", "line 1: duplicate column 'a'"),
        (b"a,,c\n1,2,3\n", "line 1: column 2 has no name"),
        (b"a,b\n1,\xff\n", "not UTF-8"),
        (b'a,b\n1,"unterminated\n', "malformed CSV"),
    ],
)
def test_bad_csv_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_table(path)
    assert str(path) in str(info.value)


def test_unknown_column_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"t.csv: no column 'z' \(columns: a, b\)"):
        read_table(path, ["a", "z"])
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "absent.csv")
    (tmp_path / "t.xlsx").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(tmp_path / "t.xlsx")


# -- where a text column's first non-numeric cell is ---------------------------------------
LINE_BREAK = re.compile(r"\r\n|\r|\n")
NUMBER_CELL = st.one_of(
    st.sampled_from(["", "NA", "nan", "null"]), st.floats(allow_nan=False).map(repr)
)
BAD_CELL = st.text(alphabet="xyz", min_size=1, max_size=4).map(lambda s: "bad" + s)


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(1, 25),
    data=st.data(),
    eol=st.sampled_from(["\n", "\r\n"]),
    chunk_rows=st.integers(1, 6),
)
def test_csv_text_origin_is_the_real_line_of_the_first_bad_cell(
    n: int, data: st.DataObject, eol: str, chunk_rows: int
) -> None:
    """The line is counted independently in the written text: blank lines and quoted
    multi-line fields (also in the same record, before the cell) shift it."""
    bad_row = data.draw(st.integers(0, n - 1), label="bad_row")
    bad = data.draw(BAD_CELL, label="bad")
    notes = st.text(alphabet=list('ab ,"\n\r'), max_size=6)
    text = eol * data.draw(st.integers(0, 2)) + "note,v,w" + eol
    line = None
    for i in range(n):
        text += eol * data.draw(st.integers(0, 2))  # blank lines are skipped
        prefix = _quoted(data.draw(notes)) + ","
        if i == bad_row:
            line = len(LINE_BREAK.findall(text + prefix)) + 1
            v = bad
        else:  # before the bad cell numbers or missing; after it anything
            v = data.draw(NUMBER_CELL if i < bad_row else st.one_of(NUMBER_CELL, BAD_CELL))
        text += prefix + v + "," + data.draw(NUMBER_CELL) + eol
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.csv"
        path.write_bytes(text.encode("utf-8"))
        with mock.patch.object(densitywatch.training.data, "_CHUNK_ROWS", chunk_rows):
            table = read_table(path)
    assert table["v"].dtype == object and table["v"][bad_row] == bad
    assert table.text_origins["v"] == CellOrigin(path, bad_row, bad, line)
    assert text_cell_origin(table, "v") == table.text_origins["v"]
    assert table.text_origins["v"].not_a_number("v") == (
        f"{path} line {line}, column 'v': expected a number, got {bad!r}"
    )
    assert "w" not in table.text_origins  # numeric columns have no origin


def test_text_origin_without_lines_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"mem": ["1.5", None, "abc", "def"], "x": [1.0, 2.0, 3.0, 4.0]}), path)
    origin = read_table(path).text_origins["mem"]
    assert origin.not_a_number("mem") == f"{path} row 2, column 'mem': expected a number, got 'abc'"
    structured = np.array([("7", 1.0), ("x", 2.0)], dtype=[("k", "U3"), ("f", "f8")])
    np.save(tmp_path / "s.npy", structured)
    table = read_table(tmp_path / "s.npy")
    assert table.text_origins == {"k": CellOrigin(tmp_path / "s.npy", 1, "x")}


def test_text_origin_of_a_plain_mapping_is_found_in_its_values() -> None:
    columns = {"k": np.array([None, "2", "oops", "x"], dtype=object), "f": np.ones(4)}
    assert text_cell_origin(columns, "k") == CellOrigin(None, 2, "oops")
    assert text_cell_origin(columns, "f") is None
    assert CellOrigin(None, 2, "oops").not_a_number("k") == (
        "row 2, column 'k': expected a number, got 'oops'"
    )


def test_text_origin_survives_folders_and_dropping_missing_records(
    tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    write_csv(tmp_path / "a.csv", ["v", "os"], [[1, "2"], [None, "3"], [3, "linux"], [4, "5"]])
    write_csv(tmp_path / "b.csv", ["v", "os"], [[5, "bsd"], [6, "mac"]])
    table, _, report = drop_missing(read_table(tmp_path))
    assert report.n_dropped == 1
    assert table.text_origins["os"] == CellOrigin(tmp_path / "a.csv", 2, "linux", 4)
    with pytest.raises(SchemaError) as info:
        infer_schema(table, overrides={"os": FeatureKind.CONTINUOUS})
    assert str(info.value) == (
        f"{tmp_path / 'a.csv'} line 4, column 'os': expected a number, got 'linux' "
        "(the column is declared continuous)"
    )


# -- Parquet ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(table=tables())
def test_parquet_round_trip(table: tuple[list[str], list[bool], list[list[Any]]]) -> None:
    names, is_text, rows = table
    arrays = {
        name: pa.array([row[j] for row in rows], type=pa.string() if is_text[j] else pa.float64())
        for j, name in enumerate(names)
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.parquet"
        pq.write_table(pa.table(arrays), path)
        read = read_table(path)
        projected = read_table(path, names[::-1])
    assert list(read) == names and list(projected) == names[::-1]
    for j, name in enumerate(names):
        assert_column(read[name], [row[j] for row in rows], is_text[j])


def test_parquet_types(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table(
            {
                "i": pa.array([1, None, 3], pa.int64()),
                "b": pa.array([True, False, None]),
                "d": pa.array(["x", "y", "x"]).dictionary_encode(),
                "t": pa.array([1, 2, 3], pa.timestamp("s")),
            }
        ),
        path,
    )
    table = read_table(path, ["i", "b", "d"])
    np.testing.assert_array_equal(table["i"], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(table["b"], [1.0, 0.0, np.nan])
    assert table["d"].tolist() == ["x", "y", "x"]
    with pytest.raises(DataError, match="column 't' has unsupported type timestamp"):
        read_table(path)
    with pytest.raises(DataError, match="no column 'zz'"):
        read_table(path, ["zz"])


# -- NumPy --------------------------------------------------------------------------------
def test_npy(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    np.save(tmp_path / "a.npy", x)
    table = read_table(tmp_path / "a.npy")
    assert list(table) == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(table["x1"], x[:, 1].astype(np.float64))
    assert table["x1"].dtype == np.float64
    assert list(read_table(tmp_path / "a.npy", ["x2", "x0"])) == ["x2", "x0"]
    with pytest.raises(DataError, match="no column 'x3'"):
        read_table(tmp_path / "a.npy", ["x3"])


def test_npy_structured_and_bad_arrays(tmp_path: Path) -> None:
    rec = np.array([(1.5, "a"), (2.5, "b")], dtype=[("v", "f8"), ("k", "U3")])
    np.save(tmp_path / "s.npy", rec)
    table = read_table(tmp_path / "s.npy")
    assert table["k"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(table["v"], [1.5, 2.5])
    np.save(tmp_path / "one.npy", np.arange(3.0))
    with pytest.raises(DataError, match=r"expected a 2-D array, got shape \(3,\)"):
        read_table(tmp_path / "one.npy")
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickle refused"):
        read_table(tmp_path / "obj.npy")
    np.save(tmp_path / "empty.npy", np.empty((0, 2)))
    with pytest.raises(DataError, match="no rows"):
        read_table(tmp_path / "empty.npy")


def test_npz_label_only_when_asked(tmp_path: Path) -> None:
    x = np.arange(6.0).reshape(3, 2)
    np.savez(tmp_path / "a.npz", y=np.array(["n", "o", "n"]), X=x)
    assert list(read_table(tmp_path / "a.npz")) == ["x0", "x1"]
    table = read_table(tmp_path / "a.npz", ["label", "x1"])
    assert list(table) == ["label", "x1"]
    assert table["label"].tolist() == ["n", "o", "n"]
    np.testing.assert_array_equal(table["x1"], x[:, 1])
    np.savez(tmp_path / "first.npz", first=x, second=np.zeros((5, 5)))
    assert len(read_table(tmp_path / "first.npz")["x0"]) == 3
    np.savez(tmp_path / "bad.npz", X=x, y=np.arange(4))
    with pytest.raises(DataError, match=r"'y' has shape \(4,\)"):
        read_table(tmp_path / "bad.npz", ["x0", "label"])
    np.savez(tmp_path / "nolabel.npz", X=x)
    with pytest.raises(DataError, match="no column 'label'"):
        read_table(tmp_path / "nolabel.npz", ["label"])


# -- folders ------------------------------------------------------------------------------
def test_folder_concatenates_in_name_order(tmp_path: Path, write_csv: Callable[..., Path]) -> None:
    write_csv(tmp_path / "b.csv", ["v", "k"], [[3, "z"]])
    write_csv(tmp_path / "a.csv", ["v", "k"], [[1, "x"], [2, "y"]])
    (tmp_path / ".hidden.csv").write_text("other\n1\n")
    (tmp_path / "notes.txt").write_text("ignored")
    table = read_table(tmp_path)
    np.testing.assert_array_equal(table["v"], [1.0, 2.0, 3.0])
    assert table["k"].tolist() == ["x", "y", "z"]
    assert list(read_table(tmp_path, ["k"])) == ["k"]


def test_folder_errors(tmp_path: Path, write_csv: Callable[..., Path]) -> None:
    with pytest.raises(DataError, match="no data files"):
        read_table(tmp_path)
    write_csv(tmp_path / "a.csv", ["v", "k"], [[1, "x"]])
    write_csv(tmp_path / "b.csv", ["v", "j"], [[1, "x"]])
    with pytest.raises(DataError, match=r"b.csv: columns \['v', 'j'\] differ"):
        read_table(tmp_path)
    write_csv(tmp_path / "b.csv", ["v", "k"], [[1, 2]])
    with pytest.raises(DataError, match=r"b\.csv: column 'k' is numeric but text in a\.csv"):
        read_table(tmp_path)


# -- missing values -----------------------------------------------------------------------
def test_drop_missing_counts_and_keeps_complete_records() -> None:
    table = {
        "a": np.array([1.0, np.nan, 3.0, 4.0, 5.0]),
        "s": np.array(["x", "y", None, "z", "w"], dtype=object),
    }
    kept, mask, report = drop_missing(table, "t.csv")
    assert mask.tolist() == [True, False, False, True, True]
    np.testing.assert_array_equal(kept["a"], [1.0, 4.0, 5.0])
    assert kept["s"].tolist() == ["x", "z", "w"]
    assert (report.n_records, report.n_dropped, report.per_column) == (5, 2, {"a": 1, "s": 1})


def test_drop_missing_allows_half_and_refuses_more() -> None:
    half = {"a": np.array([1.0, np.nan, 2.0, np.nan]), "b": np.arange(4.0)}
    assert drop_missing(half)[2].n_dropped == 2
    more = {"a": np.array([1.0, np.nan, np.nan, 2.0, 3.0]), "b": np.array([1.0, 2, 3, np.nan, 4])}
    message = r"t\.csv: 3 of 5 records .* column 'a' alone is missing in 2"
    with pytest.raises(DataError, match=message):
        drop_missing(more, "t.csv")


def test_entirely_missing_column_is_named() -> None:
    table = {"a": np.arange(3.0), "gone": np.full(3, np.nan)}
    with pytest.raises(DataError, match=r"t\.csv: column 'gone' is entirely missing"):
        drop_missing(table, "t.csv")
    text = {"a": np.arange(2.0), "s": np.array([None, None], dtype=object)}
    with pytest.raises(DataError, match="column 's' is entirely missing"):
        drop_missing(text, "t.csv")


# -- encoding -----------------------------------------------------------------------------
def test_encode_table_in_chunks_matches_schema_encode() -> None:
    rng = np.random.default_rng(0)
    table = {
        "v": rng.normal(size=50),
        "os": np.array(rng.choice(["a", "b", "c"], size=50), dtype=object),
        "k": rng.integers(0, 3, size=50).astype(np.float64),
    }
    schema = infer_schema(table)
    direct = schema.encode(np.column_stack([table["v"], table["k"]]), [[s] for s in table["os"]])
    np.testing.assert_array_equal(encode_table(schema, table, chunk=7), direct)


def test_encode_table_errors_name_column_and_record() -> None:
    table = {"v": np.arange(20.0), "os": np.array(["a", "b"] * 10, dtype=object)}
    schema = infer_schema(table)
    with pytest.raises(DataError, match="no column 'os'"):
        encode_table(schema, {"v": table["v"]})
    with pytest.raises(DataError, match="column 'os' does not hold text"):
        encode_table(schema, {"v": table["v"], "os": np.zeros(20)})
    bad = dict(table, v=np.where(np.arange(20) == 13, np.inf, table["v"]))
    with pytest.raises(DataError, match="record 13: feature 'v' is inf"):
        encode_table(schema, bad, chunk=5)
