"""End-to-end tests of the detection benchmark harness on tiny synthetic ADBench-like folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmarks.detection import harness
from benchmarks.detection import methods as method_runs
from benchmarks.detection.harness import (
    _calibration_from_other_runs,
    _same_protocol,
    dataset_name,
    main,
    make_split,
    seed_record,
    summarise,
)
from benchmarks.detection.methods import Calibrated, MethodRun, Split

torch.set_num_threads(1)

PEER_KEYS = {"roc_auc", "roc_auc_std", "pr_auc", "pr_auc_std", "train_time_s", "n_train"}


def _run(data: Path, out: Path, methods: list[str], *extra: str) -> dict:
    argv = [
        "--data",
        str(data),
        "--seeds",
        "2",
        "--out",
        str(out),
        "--threads",
        "1",
        "--no-progress",
        "--methods",
        *methods,
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "detection.json").read_text())


def test_end_to_end_schema_metrics_and_markdown(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    methods = ["densitywatch", "knn", "ecod", "gmm"]
    result = _run(data_dir, out, methods)

    assert result["seeds"] == 2
    assert set(result["datasets"]) == {"easy", "small.set"}
    assert set(result["summary"]) == set(methods)
    assert result["config"]["methods"] == methods
    assert result["machine"]["cpu_count"] >= 1 and isinstance(result["commit"], str)
    for entry in result["datasets"].values():
        for m in methods:
            assert set(entry[m]) >= PEER_KEYS
            assert 0.0 <= entry[m]["roc_auc"] <= 100.0 and entry[m]["roc_auc_std"] >= 0.0
        for m in ("densitywatch", "gmm"):
            assert np.isfinite(entry[m]["test_nll_per_dim"])
        dw = entry["densitywatch"]
        assert {"fpr_at_1pct", "recall_at_1pct", "test_normals", "n_features"} <= set(dw)

    assert all(len(result["per_seed"][n][m]) == 2 for n in result["datasets"] for m in methods)
    easy = result["datasets"]["easy"]
    # Fit half = 500 normals: the ranking model fits on all of them, like the peers; the
    # calibrated second model holds 20% back.
    assert easy["knn"]["n_train"] == easy["densitywatch"]["n_train"] == 500
    assert easy["densitywatch"]["n_calib"] == 100
    assert easy["densitywatch"]["test_normals"] == 500 and easy["knn"]["n_features"] == 3
    for m in methods:  # anomalies six standard deviations away: every method separates them
        assert easy[m]["roc_auc"] > 97.0, m
    # A 1% level on 100 calibration points gives a realised FPR of a few percent at most,
    # and catches (nearly) all of the far anomalies.
    assert 0.0 <= easy["densitywatch"]["fpr_at_1pct"] <= 5.0
    assert easy["densitywatch"]["recall_at_1pct"] > 90.0
    # 24 calibration rows cannot support a 1% level: reported as null, not invented.
    assert result["datasets"]["small.set"]["densitywatch"]["fpr_at_1pct"] is None
    # Gaussian data: a full-covariance GMM's NLL per dim is close to the true 0.5 log(2πe).
    assert abs(easy["gmm"]["test_nll_per_dim"] - 0.5 * np.log(2 * np.pi * np.e)) < 0.15

    assert easy["published"] == {"KNN": 99.0, "IForest": 97.0}
    assert result["published_summary"] == {"KNN": 99.0, "IForest": 97.0}
    summary = result["summary"]
    assert summary["knn"]["mean_roc_auc"] == pytest.approx(
        np.mean([e["knn"]["roc_auc"] for e in result["datasets"].values()])
    )
    assert 0 <= summary["densitywatch"]["nll_wins_vs_gmm"] <= 2
    assert summary["densitywatch"]["datasets_fpr_in_range"] == 0  # no dataset ≥ 1000 normals

    md = (out / "detection.md").read_text()
    assert "| easy |" in md and "| small.set |" in md and "published" in md
    assert (out / "detection.partial.json").is_file()


def test_resume_skips_finished_datasets(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = _run(data_dir, out, ["knn", "iforest"])
    # Corrupt a finished dataset: a resumed run must not read it again.
    (data_dir / "adbench" / "1_Easy.npz").write_bytes(b"not an npz")
    resumed = _run(data_dir, out, ["knn", "iforest"], "--resume")
    assert resumed["datasets"]["easy"] == first["datasets"]["easy"]
    assert resumed["per_seed"] == first["per_seed"]
    assert resumed["datasets"]["easy"]["commit"] == first["commit"]
    assert not any("Carried over" in n for n in resumed["notes"])  # same commit throughout
    # A dataset computed at another commit is named in the notes of the resumed result.
    partial = out / "detection.partial.json"
    doc = json.loads(partial.read_text())
    doc["datasets"]["easy"]["commit"] = "0123abc"
    assert doc["datasets"]["easy"]["threads"] == 1
    doc["datasets"]["easy"]["threads"] = 7
    partial.write_text(json.dumps(doc))
    again = _run(data_dir, out, ["knn", "iforest"], "--resume")
    assert again["datasets"]["easy"]["commit"] == "0123abc"
    assert any("from commit 0123abc: easy" in n for n in again["notes"])
    assert any("--threads 7 (config.threads is this run's): easy." in n for n in again["notes"])
    assert not any("small.set" in n for n in again["notes"])
    assert not any("merged from" in n for n in again["notes"])
    assert "0123abc" in (out / "detection.md").read_text()
    # Without --resume the corrupt file is read and the run fails.
    with pytest.raises(Exception):  # noqa: B017 - numpy raises its own unpickling/format errors
        main(
            [
                "--data",
                str(data_dir),
                "--seeds",
                "2",
                "--out",
                str(out),
                "--no-progress",
                "--methods",
                "knn",
            ]
        )


def _counting_runner(monkeypatch: pytest.MonkeyPatch, stop_after: int | None) -> list[str]:
    """Wrap the harness's method runner: record each fit, and stop the run (as a killed
    process would) after `stop_after` fits."""
    calls: list[str] = []
    real = method_runs.runner  # the harness's own may be an earlier wrapper

    def counted(name: str) -> Any:
        def run(split: Split, options: Any) -> MethodRun:
            if stop_after is not None and len(calls) == stop_after:
                raise KeyboardInterrupt
            calls.append(f"{name}/{split.seed}")
            return real(name)(split, options)

        return run

    monkeypatch.setattr(harness, "runner", counted)
    return calls


def test_resume_inside_a_dataset_keeps_its_finished_seeds(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    methods = ["knn", "iforest"]
    whole = _run(data_dir, tmp_path / "whole", methods)
    out = tmp_path / "results"
    # Stopped at the third fit: "easy" has seed 0 of both methods and nothing of seed 1.
    _counting_runner(monkeypatch, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        _run(data_dir, out, methods)
    partial = json.loads((out / "detection.partial.json").read_text())
    running = partial["unfinished"]["easy"]
    assert [len(running["per_seed"][m]) for m in methods] == [2, 1]
    assert partial["datasets"] == {} and running["commit"] == whole["commit"]

    calls = _counting_runner(monkeypatch, stop_after=None)
    resumed = _run(data_dir, out, methods, "--resume")
    # Only the missing fits ran: iforest's seed 1 of "easy", then all of "small.set".
    assert calls == ["iforest/1", "knn/0", "iforest/0", "knn/1", "iforest/1"]
    for name in whole["datasets"]:
        for m in methods:
            got = [r["roc_auc"] for r in resumed["per_seed"][name][m]]
            assert got == [r["roc_auc"] for r in whole["per_seed"][name][m]]
    assert "unfinished" not in json.loads((out / "detection.partial.json").read_text())
    assert not any("Finished by --resume" in n for n in resumed["notes"])  # one commit

    # Begun at another commit: the entry keeps it, names the one that finished it, and the
    # notes say so.
    partial["unfinished"]["easy"]["commit"] = "0123abc"
    (out / "detection.partial.json").write_text(json.dumps(partial))
    again = _run(data_dir, out, methods, "--resume")
    easy = again["datasets"]["easy"]
    assert easy["commit"] == "0123abc" and easy["finished_at_commit"] == again["commit"]
    finished = [n for n in again["notes"] if n.startswith("Finished by --resume")]
    assert len(finished) == 1 and finished[0].endswith(": easy.")


def test_calib_fraction_zero_fits_densitywatch_on_the_whole_fit_half(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    result = _run(
        data_dir,
        out,
        ["densitywatch", "knn"],
        "--calib-fraction",
        "0",
        "--seeds",
        "1",
        "--datasets",
        "small.set",
    )
    entry = result["datasets"]["small.set"]
    assert entry["densitywatch"]["n_train"] == entry["knn"]["n_train"] == 60
    assert entry["densitywatch"]["n_calib"] == 0 and entry["densitywatch"]["fpr_at_1pct"] is None
    assert result["config"]["calib_fraction"] == 0.0
    assert any("--calib-fraction 0" in n for n in result["notes"])
    # Another fraction is another protocol: --resume starts over rather than mixing them.
    assert not _same_protocol(result["config"], {**result["config"], "calib_fraction": 0.2})
    # Nor with a file of protocol version 1, whose densitywatch ranking came from the
    # calibrated (80%) model: such files have no protocol_version.
    old = {k: v for k, v in result["config"].items() if k != "protocol_version"}
    assert _same_protocol(result["config"], dict(result["config"]))
    assert not _same_protocol(old, result["config"])


def test_fpr_is_measured_on_the_calibrated_model_not_the_ranking_model() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    split = Split(x_fit=np.zeros((8, 1)), x_test=np.zeros((6, 1)), y_test=y, seed=0)
    ranking_log_p = np.array([0.0, 0.0, 0.0, 0.0, -9.0, -9.0])
    calibrated_log_p = np.array([-5.0, 0.0, 0.0, 0.0, -9.0, 0.0])
    run = MethodRun(
        score=-ranking_log_p,
        train_time_s=1.0,
        score_time_s=0.1,
        n_fit=8,
        log_p=ranking_log_p,
        calibrated=Calibrated(test_log_p=calibrated_log_p, threshold_1pct=-1.0),
        extra={"n_calib": 2},
    )
    rec = seed_record(run, split)
    assert rec["roc_auc"] == 100.0  # ranking: the whole-half model separates perfectly
    assert rec["fpr_at_1pct"] == 25.0 and rec["recall_at_1pct"] == 50.0  # the calibrated one
    no_calibration = seed_record(MethodRun(**{**run.__dict__, "calibrated": None}), split)
    assert "fpr_at_1pct" not in no_calibration and no_calibration["n_calib"] == 2


def test_calibration_merged_from_another_run_is_named_in_the_notes() -> None:
    results = {
        "a": {"densitywatch": {"calibration_commit": "c1"}, "knn": {}},
        "b": {"knn": {}},
        "c": {"densitywatch": {"calibration_commit": "c1"}},
        "d": {"densitywatch": {"calibration_commit": "c0"}},
        "e": {"densitywatch": {}},
    }
    notes = _calibration_from_other_runs(results)
    assert len(notes) == 2
    assert "commit c0" in notes[0] and notes[0].endswith(": d.")
    assert "commit c1" in notes[1] and notes[1].endswith(": a, c.")
    assert _calibration_from_other_runs({"b": {"knn": {}}}) == []


@pytest.mark.parametrize("fraction", ["-0.1", "0.6", "nan"])
def test_calib_fraction_out_of_range_is_rejected(
    data_dir: Path, fraction: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(data_dir), "--calib-fraction", fraction, "--no-progress"]) == 2
    assert "--calib-fraction must be in [0, 0.5]" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "Minqi824/ADBench" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--data", str(tmp_path / "empty"), "--no-progress"]) == 2
    assert "adbench/datasets/Classical" in capsys.readouterr().err


def test_unknown_dataset_and_bad_cap_are_rejected(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data", str(data_dir), "--datasets", "nope", "--no-progress"]) == 2
    assert "easy" in capsys.readouterr().err  # lists what is available
    assert main(["--data", str(data_dir), "--fit-cap", "knn=x", "--no-progress"]) == 2


def test_dataset_names_match_the_published_table() -> None:
    assert dataset_name(Path("22_magic.gamma.npz")) == "magic.gamma"
    assert dataset_name(Path("1_ALOI.npz")) == "aloi"
    assert dataset_name(Path("42_WBC.npz")) == "wbc"
    assert dataset_name(Path("18_Ionosphere.npz")) == "ionosphere"


def test_split_is_half_the_normals_and_all_anomalies() -> None:
    y = np.array([0] * 11 + [1] * 4)
    x = np.arange(len(y), dtype=float)[:, None]
    a, b = make_split(x, y, seed=0, max_rows=None), make_split(x, y, seed=1, max_rows=None)
    assert len(a.x_fit) == 5 and len(a.x_test) == 10 and a.y_test.sum() == 4
    fit_rows = set(a.x_fit[:, 0])
    assert fit_rows.isdisjoint(a.x_test[:, 0]) and fit_rows <= set(range(11))
    assert set(a.x_test[:, 0]) | fit_rows == set(range(15))
    assert fit_rows != set(b.x_fit[:, 0])  # seeds give different splits


def test_test_nll_is_compared_with_the_flows_only_where_all_are_densities_of_one_measure() -> None:
    def entry(kinds: dict[str, int], dw: float, maf: float, nsf: float) -> dict[str, Any]:
        common = {"roc_auc": 50.0, "pr_auc": 10.0, "train_time_s": 1.0, "test_normals": 10}
        return {
            "densitywatch": {**common, **kinds, "test_nll_per_dim": dw},
            "gmm": {**common, "test_nll_per_dim": 9.0},
            "maf": {**common, "test_nll_per_dim": maf},
            "nsf": {**common, "test_nll_per_dim": nsf},
        }

    plain = {"n_integer_features": 0, "n_categorical_features": 0, "n_atom_features": 0}
    datasets = {
        "a": entry(plain, 1.0, 2.0, 0.5),
        "b": entry(plain, 1.0, 3.0, 3.0),
        # A flow's density spikes on an atom; densitywatch gives it a probability.
        "c": entry({**plain, "n_atom_features": 4}, 1.0, -5.0, -5.0),
        "d": entry({"n_integer_features": 2}, 1.0, -5.0, -5.0),  # counts missing: not compared
    }
    summary, _ = summarise(datasets, ["densitywatch", "gmm", "maf", "nsf"], {})
    same = summary["densitywatch"]["nll_same_measure"]
    assert same["datasets"] == ["a", "b"]
    assert same["mean_test_nll_per_dim"] == {
        "densitywatch": 1.0,
        "gmm": 9.0,
        "maf": 2.5,
        "nsf": 1.75,
    }
    assert (same["wins_vs_maf"], same["wins_vs_nsf"], same["wins_vs_gmm"]) == (2, 1, 2)
