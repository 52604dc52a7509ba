"""The capacity benchmark: rules compared on held-out NLL of fit data, and the cost section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.capacity.harness import (
    main,
    mixed_nll,
    parse_rule,
    parse_shape,
    parse_spec,
    rule_outcome,
    split_variant,
)
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
    assert split_variant("w8k2e3@500+a0.1").atom_fraction == 0.1
    assert not split_variant("default+f32+a0.2").half_precision
    assert parse_rule("z=default+a0.05,w8k2e3+a0.2") == ("z", ["default+a0.05", "w8k2e3+a0.2"])
    for bad in ("w8k2e3+a0", "w8k2e3+a1.5", "w8k2+a0.1", "default+b", "default+a"):
        with pytest.raises(HarnessError):
            parse_rule(f"r={bad}")
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
    assert out == {
        "selected": "b",
        "held_out_nll_per_dim": 0.9,
        "held_out_mixed_nll_per_dim": None,
        "train_time_s": 3.0,
        "weights": 20,
    }


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
    assert (c["rows"], c["features"]) == (60, 3)
    # Packed float16: under the 4 bytes per weight of dense float32, above the mask's share.
    assert 0.5 * c["weights"] < c["artifact_bytes"] < 4 * c["weights"]
    md = (out / "capacity.md").read_text()
    assert "| tiny |" in md and "python -m benchmarks.capacity" in md


def test_the_mixed_measure_counts_a_reference_atom_by_the_mass_of_its_window() -> None:
    from densitywatch.density.model import ArchitectureSpec, DensityModel
    from densitywatch.density.schema import FeatureSpec, Schema
    from densitywatch.training.fit import mean_nll

    torch.manual_seed(0)
    schema = Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])
    model = DensityModel(schema, ArchitectureSpec(hidden_width=8)).eval()
    x = np.array([[0.0, 0.3], [0.0, -1.0], [0.7, 0.2], [-0.4, 1.1]])
    held = torch.from_numpy(x)
    # No reference atoms: the plain NLL.
    assert mixed_nll(model, held, x, {}) == pytest.approx(mean_nll(model, held), rel=1e-6)
    # A window over the whole line has probability one: rows on the atom lose feature a's
    # density term and keep b's; rows off it are unchanged.
    terms = model.member_terms(held)[0].detach().numpy()
    on = x[:, 0] == 0.0
    expected = -np.mean(np.where(on, 0.0, terms[:, 0]) + terms[:, 1])
    assert mixed_nll(model, held, x, {0: (0.0, 1e6)}) == pytest.approx(expected, rel=1e-5)


def test_rules_with_and_without_atoms_are_compared_on_the_mixed_measure(tmp_path: Path) -> None:
    data = tmp_path / "data" / "adbench"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(200, 3)), 0.0)  # about half of each column exactly zero
    np.savez(data / "1_relu.npz", X=x, y=(np.arange(200) % 20 == 0).astype(np.int64))
    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--out", str(out)]
    assert main([*argv, "--rule", "plain=w8k2e1", "--rule", "atoms=w8k2e1+a0.05"]) == 0
    result = json.loads((out / "capacity.json").read_text())
    by_spec = {r["spec"]: r for r in result["records"]}
    plain, atoms = by_spec["w8k2e1"], by_spec["w8k2e1+a0.05"]
    assert (plain["atoms"], atoms["atoms"]) == (0, 3)
    # A model with every reference atom is already on the reference measure; one without
    # them is read through its windows' masses, not its density spikes.
    assert atoms["held_out_mixed_nll_per_dim"] == pytest.approx(atoms["held_out_nll_per_dim"])
    assert plain["held_out_mixed_nll_per_dim"] != pytest.approx(plain["held_out_nll_per_dim"])
    assert result["summary"]["rules"]["atoms"]["measure"] == "mixed"
    assert "mixed NLL/d" in (out / "capacity.md").read_text()


def test_the_result_names_the_commit_the_run_started_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEAD can move while a long run fits (a commit made meanwhile): the code that ran is
    the code loaded at the start."""
    import benchmarks.capacity.harness as harness

    data = tmp_path / "data" / "adbench"
    data.mkdir(parents=True)
    write_dataset(data / "1_tiny.npz", n_normal=80, n_anomaly=5, d=2, shift=4.0, seed=0)
    fitted: list[str] = []
    run_task = harness.run_task

    def recorded(task: harness.Task) -> dict[str, object]:
        fitted.append(task.spec)
        return run_task(task)

    monkeypatch.setattr(harness, "run_task", recorded)
    monkeypatch.setattr(harness, "git_commit", lambda: "after" if fitted else "before")
    out = tmp_path / "out"
    argv = ["--data", str(tmp_path / "data"), "--rule", "r=w8k1e1", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "capacity.json").read_text())["commit"] == "before"
