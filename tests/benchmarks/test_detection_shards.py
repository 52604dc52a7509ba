"""Sharded detection runs (`--shard K/N`) and their merge (`--merge`) on tiny synthetic data:
a merge must give the document one unsharded run gives, and refuse files that do not fit."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.common import command_line
from benchmarks.detection.harness import (
    MODULE,
    Shard,
    main,
    markdown,
    measures_speed,
    parse_shard,
)
from tests.benchmarks.detection_support import write_dataset

METHODS = ["knn", "iforest", "gmm"]  # cheap: the whole module runs in seconds
SELECTION = ["easy", "small.set", "third"]  # sorted: positions 0, 1, 2
TIMING_KEYS = {"train_time_s", "score_time_s", "mean_train_time_s"}
RUN_KEYS = {"created_at", "commands", "merged_from", "shard"}  # not figures


@dataclass
class Runs:
    data: Path
    single: Path  # --out of one unsharded run
    shards: Path  # --out of every shard run


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--seeds",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--methods",
        *METHODS,
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("detection")
    data = root / "data"
    (data / "adbench").mkdir(parents=True)
    (data / "published").mkdir()
    write_dataset(data / "adbench" / "1_Easy.npz", 400, 20, 3, shift=6.0, seed=1)
    write_dataset(data / "adbench" / "2_small.set.npz", 120, 10, 4, shift=1.5, seed=2)
    write_dataset(data / "adbench" / "3_Third.npz", 200, 15, 2, shift=3.0, seed=3)
    (data / "published" / "semi_supervised_aucroc.csv").write_text(
        "dataset,KNN,IForest\neasy,99.0,97.0\nthird,90.0,95.0\n"
    )
    assert main(_argv(data, root / "single")) == 0
    for shard in ("0/2", "1/2", "0/3", "1/3", "2/3"):
        assert main(_argv(data, root / "shards", "--shard", shard)) == 0
    return Runs(data, root / "single", root / "shards")


def _shard_file(runs: Runs, shard: str) -> Path:
    k, n = shard.split("/")
    return runs.shards / f"detection-shard-{k}-of-{n}.json"


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _figures(obj: Any) -> Any:
    """obj without timings and run bookkeeping: what must not depend on sharding."""
    if isinstance(obj, dict):
        return {k: _figures(v) for k, v in obj.items() if k not in TIMING_KEYS | RUN_KEYS}
    if isinstance(obj, list):
        return [_figures(v) for v in obj]
    return obj


def _with_timings_of(doc: Any, other: Any) -> Any:
    """doc with every timing replaced by other's (same structure, or a KeyError); run
    bookkeeping stays doc's."""
    if isinstance(doc, dict):
        return {
            k: v
            if k in RUN_KEYS
            else other[k]
            if k in TIMING_KEYS
            else _with_timings_of(v, other[k])
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_with_timings_of(a, b) for a, b in zip(doc, other, strict=True)]
    return doc


def _merge(out: Path, *files: Path, extra: tuple[str, ...] = ()) -> int:
    return main(["--merge", *map(str, files), "--out", str(out), *extra])


# --- K/N parsing and selection ------------------------------------------------------------


@given(st.integers(1, 10**12).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_parse_shard_reads_every_k_below_n(kn: tuple[int, int]) -> None:
    k, n = kn
    shard = parse_shard(f"{k}/{n}")
    assert shard == Shard(k, n) and str(shard) == f"{k}/{n}"
    assert parse_shard(f"00{k}/0{n}") == shard  # leading zeros are the same numbers


@given(st.integers(0, 10**12).flatmap(lambda n: st.tuples(st.integers(n, n + 10**6), st.just(n))))
def test_parse_shard_refuses_k_not_below_n(kn: tuple[int, int]) -> None:
    k, n = kn
    with pytest.raises(argparse.ArgumentTypeError, match="0 <= K < N"):
        parse_shard(f"{k}/{n}")


def _is_k_of_n(text: str) -> bool:
    """The spec: two runs of ASCII digits around one slash, the first number the smaller."""
    parts = text.split("/")
    digits = all(p and all(c in "0123456789" for c in p) for p in parts)
    return len(parts) == 2 and digits and int(parts[0]) < int(parts[1])


@given(st.text(alphabet="0123456789/-+ .\n\t٣x", max_size=8))
def test_parse_shard_accepts_exactly_k_slash_n(text: str) -> None:
    if _is_k_of_n(text):
        k, n = text.split("/")
        assert parse_shard(text) == Shard(int(k), int(n))
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shard(text)


@pytest.mark.parametrize(
    "text", ["", "1", "0/", "/2", "-1/2", "0/-2", "+0/2", " 0/2", "0/2 ", "0/2\n", "0//2", "0/2/3"]
)
def test_parse_shard_refuses_near_misses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shard(text)


def test_parse_shard_refuses_non_ascii_digits() -> None:
    # int() reads these, but a shard is written in ASCII digits only.
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shard("٠/٢")


def test_a_bad_shard_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--shard", "2/2", "--no-progress"])
    assert exit_info.value.code == 2
    assert "expected K/N with 0 <= K < N, got '2/2'" in capsys.readouterr().err


@given(st.integers(0, 40), st.integers(1, 9))
def test_the_shards_of_n_partition_the_selection(length: int, n: int) -> None:
    items = list(range(length))
    parts = [Shard(k, n).of(items) for k in range(n)]
    assert sorted(x for part in parts for x in part) == items
    assert all(part == items[k::n] for k, part in enumerate(parts))


def test_only_shard_0_measures_training_speed() -> None:
    dw = ["densitywatch", "knn"]
    assert measures_speed(dw, no_speed=False, shard=None)
    assert measures_speed(dw, no_speed=False, shard=Shard(0, 3))
    assert not measures_speed(dw, no_speed=False, shard=Shard(1, 3))
    assert not measures_speed(dw, no_speed=True, shard=Shard(0, 3))
    assert not measures_speed(dw, no_speed=True, shard=None)
    assert not measures_speed(["knn"], no_speed=False, shard=None)


# --- shard runs -----------------------------------------------------------------------------


def test_a_shard_runs_its_datasets_and_records_the_selection(runs: Runs) -> None:
    single = _read(runs.single / "detection.json")
    doc = _read(_shard_file(runs, "0/2"))
    assert list(doc["datasets"]) == list(doc["per_seed"]) == ["easy", "third"]
    assert doc["shard"] == {"index": 0, "count": 2, "selection": SELECTION}
    assert list(_read(_shard_file(runs, "1/2"))["datasets"]) == ["small.set"]
    assert doc["commands"] == [
        command_line(MODULE, _argv(runs.data, runs.shards, "--shard", "0/2"))
    ]
    for name in ("easy", "third"):  # the same figures as the unsharded run's
        assert _figures(doc["datasets"][name]) == _figures(single["datasets"][name])
        assert _figures(doc["per_seed"][name]) == _figures(single["per_seed"][name])
    # Each shard has its own files, so shards can share --out; none writes detection.json.
    assert (runs.shards / "detection-shard-0-of-2.partial.json").is_file()
    assert not (runs.shards / "detection.json").exists()
    md = (runs.shards / "detection-shard-0-of-2.md").read_text()
    assert "Shard 0/2: 2 of the 3 selected datasets" in md
    assert "| easy |" in md and "| third |" in md and "| small.set |" not in md


def test_a_run_lists_its_command_in_the_markdown(runs: Runs) -> None:
    command = command_line(MODULE, _argv(runs.data, runs.single))
    assert _read(runs.single / "detection.json")["commands"] == [command]
    md = (runs.single / "detection.md").read_text()
    assert f"## Commands\n\nRun from the repository root:\n\n```sh\n{command}\n```\n" in md


def test_a_resumed_shard_lists_every_command_that_contributed(runs: Runs, tmp_path: Path) -> None:
    first = ["--data", str(runs.data), "--seeds", "1", "--no-progress", "--methods", "knn"]
    first += ["--out", str(tmp_path), "--shard", "1/2", "--datasets", "easy", "small.set"]
    assert main(first) == 0
    again = [*first, "--resume"]
    assert main(again) == 0
    doc = _read(tmp_path / "detection-shard-1-of-2.json")
    assert list(doc["datasets"]) == ["small.set"]
    assert doc["shard"]["selection"] == ["easy", "small.set"]
    assert doc["commands"] == [command_line(MODULE, first), command_line(MODULE, again)]
    assert (
        "Run from the repository root, in this order:"
        in (tmp_path / "detection-shard-1-of-2.md").read_text()
    )


def test_a_shard_without_datasets_is_refused(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(runs.data, tmp_path, "--shard", "3/4")) == 2
    assert "--shard 3/4 selects no dataset: 3 selected" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- merge ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shards",
    [("0/2", "1/2"), ("1/2", "0/2"), ("0/3", "1/3", "2/3"), ("2/3", "1/3", "0/3"), ("0/2", "1/3")],
)
def test_a_merge_writes_what_one_run_writes(
    runs: Runs, tmp_path: Path, shards: tuple[str, ...]
) -> None:
    files = [_shard_file(runs, s) for s in shards]
    out = tmp_path / "merged"
    assert _merge(out, *files) == 0
    single = _read(runs.single / "detection.json")
    merged = _read(out / "detection.json")
    assert _figures(merged) == _figures(single)
    assert list(merged) == [*single, "merged_from"]
    # Markdown: the unsharded run's, but for the timings and the commands.
    expected = {**_with_timings_of(single, merged), "commands": merged["commands"]}
    assert (out / "detection.md").read_text() == markdown(expected)
    # Shards in order of (N, K), each with its command, then the merge command.
    ordered = sorted(shards, key=lambda s: (int(s.split("/")[1]), int(s.split("/")[0])))
    assert [m["shard"] for m in merged["merged_from"]] == ordered
    assert merged["commands"] == [
        *(command_line(MODULE, _argv(runs.data, runs.shards, "--shard", s)) for s in ordered),
        command_line(MODULE, ["--merge", *map(str, files), "--out", str(out)]),
    ]
    assert "\n".join(merged["commands"]) in (out / "detection.md").read_text()


def test_a_merge_takes_training_speed_and_machine_from_shard_0(runs: Runs, tmp_path: Path) -> None:
    speed = {"rows": 7, "features": 3, "train_time_s": 1.5, "epochs": 2, "val_nll": 0.1}
    zero = _edited(runs, tmp_path, "0/2", lambda d: d.update(training_speed=speed))
    one = _edited(runs, tmp_path, "1/2", lambda d: d["machine"].update(cpu="Other CPU"))
    out = tmp_path / "merged"
    assert _merge(out, one, zero) == 0
    merged = _read(out / "detection.json")
    assert merged["training_speed"] == speed
    assert merged["machine"] == _read(zero)["machine"]
    assert merged["notes"][-1].startswith("Shard 1/2 ran on another machine: Other CPU")
    assert "Training speed: a 7 x 3 stream trains in 1.5 s" in (out / "detection.md").read_text()


def _edited(runs: Runs, tmp_path: Path, shard: str, change: Callable[[dict], Any]) -> Path:
    """A copy of a shard's result file with `change` applied to its document."""
    doc = _read(_shard_file(runs, shard))
    change(doc)
    path = tmp_path / f"edited-{shard.replace('/', '-of-')}.json"
    path.write_text(json.dumps(doc))
    return path


def _set_config(key: str, value: Any) -> Callable[[dict], Any]:
    return lambda doc: doc["config"].update({key: value})


def _add_stray(doc: dict[str, Any]) -> None:
    doc["datasets"]["stray"] = doc["datasets"]["small.set"]
    doc["per_seed"]["stray"] = doc["per_seed"]["small.set"]


EDITS: list[tuple[Callable[[dict], Any], str]] = [
    (_set_config("protocol_version", 1), "different configurations (protocol_version: 2 vs 1)"),
    (_set_config("methods", ["knn"]), "(methods: ['knn', 'iforest', 'gmm'] vs ['knn'])"),
    (_set_config("threads", 2), "different configurations (threads: 1 vs 2)"),
    (_set_config("fit_caps", {"gmm": 40}), "(fit_caps: {} vs {'gmm': 40})"),
    (lambda d: d.update(commit="0123abc"), "ran at different commits"),
    (lambda d: d["shard"].update(selection=["small.set"]), "different dataset selections"),
    (lambda d: d.pop("per_seed"), "is not a whole shard result (no per_seed)"),
    (lambda d: d.pop("shard"), "is not a result file of a --shard run"),
]


@pytest.mark.parametrize(("change", "message"), EDITS)
def test_a_merge_refuses_shards_of_another_run(
    runs: Runs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Callable[[dict], Any],
    message: str,
) -> None:
    edited = _edited(runs, tmp_path, "1/2", change)
    out = tmp_path / "merged"
    assert _merge(out, _shard_file(runs, "0/2"), edited) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_merge_refuses_shards_run_with_other_seeds(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(runs.data, tmp_path / "other", "--shard", "1/2", "--seeds", "1")) == 0
    out = tmp_path / "merged"
    other = tmp_path / "other" / "detection-shard-1-of-2.json"
    assert _merge(out, _shard_file(runs, "0/2"), other) == 2
    assert "different configurations (seeds: [0, 1] vs [0])" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (("0/2", "0/2"), "overlap: both hold dataset easy"),
        (("0/2", "1/3", "2/3"), "overlap: both hold dataset third"),
        (("0/3", "0/2"), "overlap: both hold dataset easy"),
        (("0/2",), "the files miss 1 of the 3 selected datasets (small.set)"),
        (("0/3", "2/3"), "the files miss 1 of the 3 selected datasets (small.set)"),
        (("1/3",), "the files miss 2 of the 3 selected datasets (easy, third)"),
    ],
)
def test_a_merge_refuses_overlapping_or_incomplete_shards(
    runs: Runs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shards: tuple[str, ...],
    message: str,
) -> None:
    out = tmp_path / "merged"
    assert _merge(out, *(_shard_file(runs, s) for s in shards)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_merge_refuses_a_dataset_outside_the_selection(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "merged"
    stray = _edited(runs, tmp_path, "1/2", _add_stray)
    assert _merge(out, _shard_file(runs, "0/2"), stray) == 2
    assert "holds stray, not in its shard's selection" in capsys.readouterr().err
    assert not out.exists()


def test_a_merge_refuses_unsharded_and_unreadable_files(
    runs: Runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "merged"
    assert _merge(out, runs.single / "detection.json") == 2
    assert "is not a result file of a --shard run" in capsys.readouterr().err
    partial = runs.shards / "detection-shard-1-of-2.partial.json"
    assert _merge(out, _shard_file(runs, "0/2"), partial) == 2
    assert "is not a result file of a --shard run" in capsys.readouterr().err
    assert _merge(out, tmp_path / "nowhere.json") == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert _merge(out, tmp_path / "broken.json") == 2
    assert "cannot read" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "flags"),
    [(("--seeds", "3"), "--seeds"), (("--shard", "0/2", "--resume"), "--resume, --shard")],
)
def test_a_merge_takes_no_run_options(
    runs: Runs,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: tuple[str, ...],
    flags: str,
) -> None:
    out = tmp_path / "merged"
    files = (_shard_file(runs, "0/2"), _shard_file(runs, "1/2"))
    assert _merge(out, *files, extra=extra) == 2
    assert f"--merge takes no option but --out (got {flags})" in capsys.readouterr().err
    assert not out.exists()
