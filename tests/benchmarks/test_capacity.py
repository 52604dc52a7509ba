"""The capacity benchmark: rules compared on held-out NLL of fit data, and the cost section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.capacity.harness import main, parse_rule, parse_shape, parse_spec, rule_outcome
from benchmarks.detection.harness import HarnessError
from tests.benchmarks.detection_support import write_dataset


def test_specs_rules_and_shapes_parse_or_are_refused() -> None:
    assert parse_spec("w8k2e3")["n_orderings"] == 3
    assert parse_spec("w8k2e3d1e-4@5000k")["weight_decay"] == 1e-4
    assert parse_rule("a=w8k2e3,w16k1e1") == ("a", ["w8k2e3", "w16k1e1"])
    assert parse_rule("default") == ("default", ["default"])
    assert parse_shape("800x1555") == (800, 1555)
    for bad in ("w8k2", "k2e3", "w8k2e3@"):
        with pytest.raises(HarnessError):
            parse_spec(bad)
    with pytest.raises(HarnessError):
        parse_rule("nodefault")
    with pytest.raises(HarnessError):
        parse_shape("800 by 3")


def test_a_rule_reports_the_candidate_with_the_lowest_validation_nll() -> None:
    records = {
        "a": {
            "selected": "a",
            "val_nll": 2.0,
            "held_out_nll_per_dim": 0.5,
            "train_time_s": 1.0,
            "weights": 10,
        },
        "b": {
            "selected": "b",
            "val_nll": 1.0,
            "held_out_nll_per_dim": 0.9,
            "train_time_s": 2.0,
            "weights": 20,
        },
    }
    out = rule_outcome(records, ["a", "b"])
    # Selection is by validation NLL, as fit does, even when the held-out figure disagrees.
    assert out == {"selected": "b", "held_out_nll_per_dim": 0.9, "train_time_s": 3.0, "weights": 20}


def test_the_command_compares_rules_and_times_the_default_fit(tmp_path: Path) -> None:
    data = tmp_path / "data" / "adbench"
    data.mkdir(parents=True)
    write_dataset(data / "1_tiny.npz", n_normal=160, n_anomaly=10, d=3, shift=4.0, seed=0)
    out = tmp_path / "out"
    argv = [
        "--data",
        str(tmp_path / "data"),
        "--seeds",
        "2",
        "--rule",
        "narrow=w8k1e1",
        "--rule",
        "both=w8k1e1,w16k2e2@300",
        "--rule",
        "flow=maf",
        "--cost-shape",
        "60x3",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads((out / "capacity.json").read_text())
    assert {r["spec"] for r in result["records"]} == {"w8k1e1", "w16k2e2@300", "maf"}
    budgeted = [r for r in result["records"] if r["spec"] == "w16k2e2@300"]
    assert all(r["weights"] <= 300 or r["selected"].startswith("w8k1e1") for r in budgeted)
    rules = result["summary"]["rules"]
    assert rules["narrow"]["mean_diff_nll_per_dim"] == 0.0
    assert rules["both"]["better"] + rules["both"]["worse"] <= 1
    # The flow's held-out NLL is of the same rows, in the same (raw) units: a Gaussian
    # stream's NLL per dimension is near 0.5 log(2 pi e) = 1.42 for both.
    for rule in ("narrow", "flow"):
        assert 1.0 < rules[rule]["mean_held_out_nll_per_dim"] < 2.5
    (c,) = result["cost"]
    assert (c["rows"], c["features"]) == (60, 3) and c["artifact_bytes"] > 4 * c["weights"]
    md = (out / "capacity.md").read_text()
    assert "| tiny |" in md and "python -m benchmarks.capacity" in md
