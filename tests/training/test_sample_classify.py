"""`densitywatch sample` and `densitywatch classify` against real models in a real store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from densitywatch.cli import main
from densitywatch.density.artifact import ArtifactStore
from densitywatch.training.data import read_table
from tests.training.calib_fixtures import (
    add_stream,
    correlated_with_colour,
    gaussian,
    training_columns,
    write_csv,
)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    s = ArtifactStore(tmp_path / "store")
    add_stream(s, "corr", "corr")
    add_stream(s, "low", "low")
    add_stream(s, "high", "high")
    add_stream(s, "other", "other")
    return s


# -- sample ---------------------------------------------------------------------------------
def test_samples_match_the_training_data(store: ArtifactStore, tmp_path: Path) -> None:
    out = tmp_path / "samples.csv"
    code = main(
        [
            "sample",
            "--store",
            str(store.root),
            "--stream",
            "corr",
            "-n",
            "4000",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert out.read_text().splitlines()[0] == "x0,x1,colour"
    got, want = read_table(out), training_columns("corr")
    assert len(got["x0"]) == 4000
    for name in ("x0", "x1"):
        std = want[name].std()
        assert abs(got[name].mean() - want[name].mean()) < 0.15 * std, name
        assert abs(got[name].std() - std) < 0.15 * std, name
        for q in (0.1, 0.5, 0.9):
            assert abs(np.quantile(got[name], q) - np.quantile(want[name], q)) < 0.25 * std
    # The dependence is learned: x1 ≈ 0.5·x0.
    assert abs(np.corrcoef(got["x0"], got["x1"])[0, 1] - 0.89) < 0.08
    for colour, share in (("red", 0.6), ("green", 0.3), ("blue", 0.1)):
        assert abs(np.mean(got["colour"] == colour) - share) < 0.05, colour


def test_sampling_is_reproducible_per_seed(
    store: ArtifactStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--store", str(store.root), "--stream", "low", "-n", "50"]
    outputs = []
    for seed in ("1", "1", "2"):
        assert main([*argv, "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert outputs[0].splitlines()[0] == "x0" and len(outputs[0].splitlines()) == 51


def test_sample_failures_exit_1_and_bad_usage_2(
    store: ArtifactStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sample", "--store", str(store.root), "--stream", "nope"]) == 1
    assert "'nope'" in capsys.readouterr().err
    assert main(["sample", "--store", str(store.root), "--stream", "low", "-n", "0"]) == 2
    assert "-n must be" in capsys.readouterr().err


def test_sample_json_is_the_one_shape(
    store: ArtifactStore, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sample", "--store", str(store.root), "--stream", "low", "-n", "5", "--json"]
    assert main(argv) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["command"] == "sample" and body["ok"] is True and body["error"] is None
    assert body["streams"]["low"]["n"] == 5 and len(body["records"]) == 5
    assert set(body["records"][0]) == {"x0"}


# -- classify -------------------------------------------------------------------------------
def two_stream_records(tmp_path: Path) -> tuple[Path, np.ndarray]:
    low, high = gaussian(300, seed=31, mean=-3.0)["x0"], gaussian(300, seed=32, mean=3.0)["x0"]
    truth = np.array(["low"] * 300 + ["high"] * 300)
    return write_csv(tmp_path / "records.csv", {"x0": np.concatenate([low, high])}), truth


def classify_argv(store: ArtifactStore, data: Path, *streams: str, extra: tuple = ()) -> list[str]:
    """`densitywatch classify` arguments for candidate `streams` (low, high if none given)."""
    candidates = [arg for s in streams or ("low", "high") for arg in ("--stream", s)]
    return ["classify", "--store", str(store.root), *candidates, "--data", str(data), *extra]


def test_classify_tells_well_separated_streams_apart(store: ArtifactStore, tmp_path: Path) -> None:
    data, truth = two_stream_records(tmp_path)
    out = tmp_path / "posterior.csv"
    assert main(classify_argv(store, data, extra=("--out", str(out)))) == 0
    table = read_table(out)
    assert list(table) == ["row", "stream", "p_low", "p_high", "log_p_low", "log_p_high"]
    np.testing.assert_allclose(table["p_low"] + table["p_high"], 1.0, atol=1e-12)
    assert np.mean(table["stream"] == truth) > 0.99
    # The posterior is Bayes' rule on the two log densities (uniform priors).
    expected = 1.0 / (1.0 + np.exp(table["log_p_high"] - table["log_p_low"]))
    np.testing.assert_allclose(table["p_low"], expected, rtol=1e-9, atol=1e-300)


def test_classify_priors_shift_the_posterior(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = two_stream_records(tmp_path)
    base = classify_argv(store, data, extra=("--json",))
    assert main(base) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["command"] == "classify" and body["ok"] is True
    assert set(body["streams"]) == {"low", "high"}
    uniform = body["records"]
    assert main([*base, "--prior", "low=9", "--prior", "high=1"]) == 0
    skewed = json.loads(capsys.readouterr().out)["records"]
    assert len(uniform) == len(skewed) == 600
    for u, s in zip(uniform, skewed, strict=True):
        # Odds multiply by the prior ratio 9.
        pu, ps = u["posterior"]["low"], s["posterior"]["low"]
        if 1e-9 < pu < 1 - 1e-9:
            assert ps / (1 - ps) == pytest.approx(9 * pu / (1 - pu), rel=1e-6)


def test_classify_refuses_records_lacking_a_streams_features(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = two_stream_records(tmp_path)
    assert main(classify_argv(store, data, "low", "other")) == 1
    err = capsys.readouterr().err
    assert "'y'" in err and "'other'" in err

    gappy = write_csv(tmp_path / "gappy.csv", {"x0": np.array([0.0, np.nan, 1.0])})
    assert main(classify_argv(store, gappy)) == 1
    assert "row 1: column 'x0'" in capsys.readouterr().err

    assert main(classify_argv(store, data, extra=("--prior", "low=0.5"))) == 2
    assert "not for ['high']" in capsys.readouterr().err


def test_samples_of_one_stream_are_classified_as_that_stream(
    store: ArtifactStore, tmp_path: Path
) -> None:
    samples = tmp_path / "high.csv"
    sample_argv = ["sample", "--store", str(store.root), "--stream", "high", "-n", "200"]
    assert main([*sample_argv, "--out", str(samples)]) == 0
    out = tmp_path / "post.csv"
    assert main(classify_argv(store, samples, extra=("--out", str(out)))) == 0
    # Bayes error between N(-3, 1) and N(3, 1) is 0.13%; the fitted model's tails add a little.
    assert np.mean(read_table(out)["stream"] == "high") > 0.97


def test_correlated_fixture_has_the_documented_correlation() -> None:
    cols = correlated_with_colour(20_000, seed=0)
    assert abs(np.corrcoef(cols["x0"], cols["x1"])[0, 1] - 0.894) < 0.01
