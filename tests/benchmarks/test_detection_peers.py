"""The density and generative peers (maf, nsf, sogaal) on tiny synthetic splits, and the second
data pool (`--pool adbench-embeddings`): its folder, file names, shards and merge."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from benchmarks.detection import flows
from benchmarks.detection.harness import (
    _same_protocol,
    dataset_name,
    find_datasets,
    main,
)
from benchmarks.detection.methods import (
    MethodOptions,
    MethodRun,
    Split,
    finite_log_p,
    run_flow,
    runner,
)
from tests.benchmarks.detection_support import write_dataset

torch.set_num_threads(1)

FAST = MethodOptions(flow_max_epochs=3)  # a few epochs: the tests check plumbing, not fits
EMBEDDING_NAMES = ["CV_by_ResNet18_MVTec-AD_bottle", "NLP_by_BERT_20news_3"]


def _split(seed: int = 0, n: int = 200, d: int = 4) -> Split:
    """Correlated Gaussian fit rows; test rows: 40 normals and 20 shifted anomalies."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(d) + 0.5 * rng.normal(size=(d, d))
    x_fit = rng.normal(size=(n, d)) @ mixing
    x_test = np.concatenate([rng.normal(size=(40, d)), rng.normal(size=(20, d)) + 4.0]) @ mixing
    y_test = np.r_[np.zeros(40, dtype=np.int64), np.ones(20, dtype=np.int64)]
    return Split(x_fit=x_fit, x_test=x_test, y_test=y_test, seed=seed)


def _scaled(split: Split, c: float) -> Split:
    return Split(split.x_fit * c, split.x_test * c, split.y_test, split.seed)


# --- the methods ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["maf", "nsf", "sogaal"])
def test_a_peer_gives_a_finite_score_per_test_row(method: str) -> None:
    split = _split()
    run = runner(method)(split, FAST)
    assert run.score.shape == (len(split.x_test),) and np.isfinite(run.score).all()
    assert run.n_fit == 200 and run.train_time_s > 0.0 and run.score_time_s >= 0.0
    if method == "sogaal":  # no likelihood
        assert run.log_p is None
    else:
        assert run.log_p is not None and np.array_equal(run.score, -run.log_p)
        extra = run.extra or {}
        assert extra["nonfinite_log_p"] == 0 and 1 <= (extra["epochs"] or 0) <= 3
        assert math.isfinite(extra["val_nll_per_dim"] or math.nan)


def test_sogaal_scores_far_anomalies_as_anomalous() -> None:
    # PyOD's SO_GAAL returns the discriminator's "real data" probability, a normality score:
    # used as is it ranks far anomalies as the most normal (ROC-AUC near 0).
    split = _split()
    run = runner("sogaal")(split, FAST)
    assert roc_auc_score(split.y_test, run.score) > 0.8


@pytest.mark.parametrize("method", ["maf", "nsf"])
@pytest.mark.parametrize("c", [4.0, 0.25])
def test_flow_log_p_is_in_raw_units(method: str, c: float) -> None:
    # Scaling by a power of two leaves the standardised inputs bit for bit the same, so the
    # same flow is fitted and log p moves by exactly the Jacobian, -d log c.
    split = _split()
    run, scaled = runner(method)(split, FAST), runner(method)(_scaled(split, c), FAST)
    assert run.log_p is not None and scaled.log_p is not None
    d = split.x_fit.shape[1]
    np.testing.assert_allclose(scaled.log_p, run.log_p - d * math.log(c), rtol=0, atol=1e-9)


def test_flow_log_p_is_in_raw_units_for_any_scale() -> None:
    # A scale of 3 rounds the standardised inputs differently in the last bit: the same
    # relation up to that rounding.
    split = _split()
    run, scaled = runner("maf")(split, FAST), runner("maf")(_scaled(split, 3.0), FAST)
    assert run.log_p is not None and scaled.log_p is not None
    np.testing.assert_allclose(scaled.log_p, run.log_p - 4 * math.log(3.0), rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["maf", "nsf"])
def test_a_constant_column_is_a_narrow_gaussian_outside_the_flow(method: str) -> None:
    split = _split()
    split.x_fit[:, 2] = 7.5
    split.x_test[:, 2] = 7.5
    moved = Split(split.x_fit, split.x_test.copy(), split.y_test, split.seed)
    moved.x_test[0, 2] += 0.01  # ten of the constant's std 1e-3 away
    run, other = runner(method)(split, FAST), runner(method)(moved, FAST)
    assert run.log_p is not None and other.log_p is not None and run.extra is not None
    assert run.extra["constant_columns"] == 1
    assert np.isfinite(run.log_p).all()
    # Only that row changes, by the Gaussian's log density ratio: -0.5 (0.01 / 1e-3)^2 = -50.
    np.testing.assert_allclose(other.log_p[1:], run.log_p[1:], rtol=0, atol=1e-9)
    assert other.log_p[0] - run.log_p[0] == pytest.approx(-50.0, abs=1e-6)
    # At the constant, the column adds log N(0; 0, 1e-3²) to log p (raw units).
    at_constant = -math.log(flows.CONSTANT_STD) - 0.5 * math.log(2 * math.pi)
    flow_only = runner(method)(
        Split(np.delete(split.x_fit, 2, 1), np.delete(split.x_test, 2, 1), split.y_test, 0), FAST
    )
    assert flow_only.log_p is not None
    np.testing.assert_allclose(run.log_p, flow_only.log_p + at_constant, rtol=0, atol=1e-9)


def test_every_column_constant_needs_no_flow() -> None:
    x_fit = np.full((50, 3), 2.0)
    x_test = np.array([[2.0, 2.0, 2.0], [2.0, 2.001, 2.0]])
    run = runner("nsf")(Split(x_fit, x_test, np.array([0, 1]), seed=0), FAST)
    assert run.log_p is not None and run.extra is not None
    assert run.extra["constant_columns"] == 3 and run.extra["epochs"] == 0
    assert run.log_p[0] > run.log_p[1] and np.isfinite(run.log_p).all()


@pytest.mark.parametrize("method", ["maf", "nsf", "sogaal"])
def test_a_peer_is_reproducible_under_a_fixed_seed(method: str) -> None:
    split = _split()
    first, again = runner(method)(split, FAST), runner(method)(split, FAST)
    np.testing.assert_array_equal(first.score, again.score)
    reseeded = runner(method)(Split(split.x_fit, split.x_test, split.y_test, seed=1), FAST)
    assert not np.array_equal(first.score, reseeded.score)


def test_early_stopping_restores_the_best_state() -> None:
    z = np.random.default_rng(0).normal(size=(60, 2))
    fitted = flows.fit_flow("maf", z, seed=0, max_epochs=400)
    assert fitted.epochs - fitted.best_epoch <= flows.PATIENCE and fitted.epochs < 400
    n_val = round(60 * flows.VAL_FRACTION)
    order = np.random.default_rng([0, 32452843]).permutation(60)
    val = torch.as_tensor(z[order[:n_val]], dtype=torch.float32)
    with torch.no_grad():
        assert float(-fitted.flow().log_prob(val).mean()) == pytest.approx(fitted.val_nll)


def test_non_finite_log_p_ranks_lowest_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed, count = finite_log_p(np.array([-3.0, np.nan, -np.inf, np.inf, -1e13]))
    assert count == 3 and np.isfinite(fixed).all()
    assert fixed[1] == fixed[2] == fixed[3] < -1e13 < -3.0
    assert finite_log_p(np.array([np.nan]))[0][0] < -1e11

    def broken(fitted: flows.FittedFlow, z: np.ndarray) -> np.ndarray:
        out = np.zeros(len(z))
        out[:2] = np.nan
        return out

    monkeypatch.setattr(flows, "log_prob", broken)
    run: MethodRun = run_flow("maf", _split(), FAST)
    assert run.extra is not None and run.extra["nonfinite_log_p"] == 2
    assert run.log_p is not None and np.isfinite(run.log_p).all()


# --- the embeddings pool --------------------------------------------------------------------


@pytest.fixture
def pools(tmp_path: Path) -> Path:
    """A data folder with both pools: two classical datasets and two embedding ones."""
    root = tmp_path / "data"
    for folder in ("adbench", "adbench-embeddings", "published"):
        (root / folder).mkdir(parents=True)
    write_dataset(root / "adbench" / "1_Easy.npz", 120, 10, 3, shift=5.0, seed=1)
    write_dataset(root / "adbench" / "2_Other.npz", 100, 10, 3, shift=3.0, seed=2)
    for i, name in enumerate(EMBEDDING_NAMES):
        write_dataset(root / "adbench-embeddings" / f"{name}.npz", 80, 10, 6, shift=4.0, seed=i)
    (root / "published" / "semi_supervised_aucroc.csv").write_text("dataset,KNN\neasy,99.0\n")
    return root


def _argv(data: Path, out: Path, *extra: str, methods: tuple[str, ...] = ("knn", "gmm")) -> list:
    base = ["--data", str(data), "--seeds", "1", "--threads", "1", "--no-progress"]
    return [*base, "--methods", *methods, "--out", str(out), *extra]


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_embedding_datasets_are_named_by_their_file_stem(pools: Path) -> None:
    path = Path("CV_by_ResNet18_MVTec-AD_bottle.npz")
    assert dataset_name(path, "adbench-embeddings") == "CV_by_ResNet18_MVTec-AD_bottle"
    assert [d.name for d in find_datasets(pools, "adbench-embeddings")] == EMBEDDING_NAMES
    assert [d.name for d in find_datasets(pools)] == ["easy", "other"]


def test_the_pool_picks_the_folder_and_names_the_results(pools: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    extra = ("--pool", "adbench-embeddings", "--datasets", "cv_by_resnet18_mvtec-ad_BOTTLE")
    argv = _argv(pools, out, *extra, methods=("knn", "gmm", "maf"))
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "detection-embeddings.json",
        "detection-embeddings.md",
        "detection-embeddings.partial.json",
    ]
    doc = _read(out / "detection-embeddings.json")
    assert doc["config"]["pool"] == "adbench-embeddings"
    entry = doc["datasets"]["CV_by_ResNet18_MVTec-AD_bottle"]
    assert entry["commit"] == doc["commit"] and "published" not in entry
    assert doc["published_summary"] == {}
    assert math.isfinite(entry["maf"]["test_nll_per_dim"]) and entry["maf"]["n_features"] == 6
    md = (out / "detection-embeddings.md").read_text()
    assert md.startswith("# Detection benchmark (semi-supervised, ADBench CV/NLP embeddings)")
    assert "## Test NLL per dimension\n" in md and "| dataset | gmm | maf |" in md
    assert "| CV_by_ResNet18_MVTec-AD_bottle |" in md
    assert "--pool adbench-embeddings" in md.split("## Commands", 1)[1]
    assert any("no published scores" in n for n in doc["notes"])
    # The default pool writes today's detection.json beside it, with the published column.
    assert main(_argv(pools, out, "--datasets", "easy")) == 0
    classical = _read(out / "detection.json")
    assert classical["config"]["pool"] == "adbench"
    assert classical["datasets"]["easy"]["published"] == {"KNN": 99.0}


def test_a_pool_folder_of_another_pool_is_refused(
    pools: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = _argv(pools / "adbench", tmp_path, "--pool", "adbench-embeddings")
    assert main(wrong) == 2
    assert "no folder" in capsys.readouterr().err
    # DATA may be the pool's own folder, as before for adbench.
    assert [d.name for d in find_datasets(pools / "adbench-embeddings", "adbench-embeddings")] == (
        EMBEDDING_NAMES
    )


def test_embedding_shards_merge_and_mixed_pools_are_refused(
    pools: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = tmp_path / "shards"
    for shard in ("0/2", "1/2"):
        assert main(_argv(pools, shards, "--pool", "adbench-embeddings", "--shard", shard)) == 0
    assert main(_argv(pools, shards, "--shard", "1/2")) == 0  # the classical pool's shard 1/2
    zero = shards / "detection-embeddings-shard-0-of-2.json"
    one = shards / "detection-embeddings-shard-1-of-2.json"
    assert list(_read(zero)["datasets"]) == ["CV_by_ResNet18_MVTec-AD_bottle"]
    # A dataset carried over from another commit keeps its commit through the merge.
    doc = _read(one)
    doc["datasets"]["NLP_by_BERT_20news_3"]["commit"] = "c0ffee"
    one.write_text(json.dumps(doc))
    merged = tmp_path / "merged"
    assert main(["--merge", str(zero), str(one), "--out", str(merged)]) == 0
    assert "detection-embeddings.json" in capsys.readouterr().out
    result = _read(merged / "detection-embeddings.json")
    assert not (merged / "detection.json").exists()
    assert result["datasets"]["NLP_by_BERT_20news_3"]["commit"] == "c0ffee"
    assert result["datasets"]["CV_by_ResNet18_MVTec-AD_bottle"]["commit"] == result["commit"]
    assert any("from commit c0ffee: NLP_by_BERT_20news_3" in n for n in result["notes"])

    mixed = ["--merge", str(zero), str(shards / "detection-shard-1-of-2.json")]
    assert main([*mixed, "--out", str(tmp_path / "mixed")]) == 2
    assert "(pool: 'adbench-embeddings' vs 'adbench')" in capsys.readouterr().err
    assert not (tmp_path / "mixed").exists()


def test_a_file_from_before_the_pool_option_is_of_the_adbench_pool() -> None:
    config = {"protocol_version": 2, "methods": ["knn"], "pool": "adbench"}
    old = {k: v for k, v in config.items() if k != "pool"}
    assert _same_protocol(old, config)
    assert not _same_protocol(old, {**config, "pool": "adbench-embeddings"})
