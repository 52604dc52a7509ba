"""The calibration job: thresholds, new versions, refusals, trim, labels, reports and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from densitywatch.cli import main
from densitywatch.density.artifact import ArtifactStore, load_artifact
from densitywatch.density.calibration import CalibrationError
from densitywatch.density.model import log_prob_numpy
from densitywatch.training.calibrate import CalibrationDataError, calibrate_stream, min_records_for
from tests.training.calib_fixtures import add_stream, gaussian, mixed, training_columns, write_csv

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    """A store with an uncalibrated N(0, 1) model ('g') and a number + text model ('m')."""
    s = ArtifactStore(tmp_path / "store")
    add_stream(s, "g", "gauss")
    add_stream(s, "m", "mixed")
    return s


def scores_of(store: ArtifactStore, stream: str, columns: dict) -> np.ndarray:
    artifact = store.load(stream)
    x = np.column_stack([columns[n] for n in artifact.manifest.feature_schema.names])
    return log_prob_numpy(artifact.model, x)


# -- the library job ------------------------------------------------------------------------
def test_calibration_writes_a_new_version_that_round_trips(store: ArtifactStore) -> None:
    data = gaussian(3000, seed=1)
    report = calibrate_stream(store, "g", data, write_report=False)
    assert (report.parent_version, report.version) == ("000001", "000002")
    assert store.versions("g") == ["000001", "000002"]
    assert store.load("g", "000001").manifest.calibration is None  # never edited in place

    loaded = store.load("g")
    cal = loaded.manifest.calibration
    assert cal is not None
    assert loaded.manifest.parent_version == "000001"
    assert loaded.manifest.weights_sha256 == store.load("g", "000001").manifest.weights_sha256
    assert cal.n_scores == 3000 and cal.data_fingerprint == report.data_fingerprint
    assert cal.created_at == report.calibrated_at

    scores = np.sort(scores_of(store, "g", data))
    assert [lv.name for lv in cal.levels] == ["warning", "critical"]
    for level, fpr in zip(cal.levels, (0.01, 0.001), strict=True):
        k = math.floor(fpr * 3001)
        assert level.rank == k
        assert level.threshold == pytest.approx(scores[k - 1], abs=1e-9)
    assert [lv.threshold for lv in report.levels] == [lv.threshold for lv in cal.levels]

    probe = np.concatenate([scores[:50], scores[:50] - 0.01])
    exact = np.array([(1 + np.sum(scores <= s + 1e-9)) / 3001 for s in probe])
    np.testing.assert_allclose(cal.p_values(probe), exact, atol=1e-12)
    reloaded = load_artifact(loaded.path).manifest.calibration
    assert reloaded is not None
    np.testing.assert_array_equal(reloaded.p_values(probe), cal.p_values(probe))


def test_realised_fpr_on_fresh_data_is_within_the_binomial_interval(
    store: ArtifactStore,
) -> None:
    """Split conformal: E[FPR] = k/(n+1) over calibration draws; average a few draws."""
    n, m, draws, fpr = 2000, 10_000, 20, 0.01
    k = math.floor(fpr * (n + 1))
    rates = []
    for r in range(draws):
        calibrate_stream(
            store, "g", gaussian(n, seed=1000 + r), levels={"warning": fpr}, write_report=False
        )
        cal = store.load("g").manifest.calibration
        assert cal is not None
        fresh = scores_of(store, "g", gaussian(m, seed=2000 + r))
        rates.append(float(np.mean(fresh < cal.levels[0].threshold)))
    mean = k / (n + 1)
    # Realised FPR per draw ~ Beta(k, n+1-k); the test count adds binomial noise.
    var_beta = k * (n + 1 - k) / ((n + 1) ** 2 * (n + 2))
    sd = math.sqrt((var_beta + mean * (1 - mean) / m) / draws)
    assert abs(np.mean(rates) - mean) < 4.5 * sd, (rates, mean, sd)


def test_too_small_a_set_is_refused_with_the_needed_size(store: ArtifactStore) -> None:
    with pytest.raises(CalibrationError, match=r"needs at least 999 clean calibration records"):
        calibrate_stream(store, "g", gaussian(500, seed=2), write_report=False)
    need = min_records_for(0.001, 0.1)
    assert need == 1109  # 1109 - ⌊110.9⌋ = 999 scores left after trimming; 1108 leaves 998
    with pytest.raises(CalibrationError, match=f"at least {need} .* with trim 0.1; got 1108"):
        calibrate_stream(store, "g", gaussian(1108, seed=2), trim_fraction=0.1, write_report=False)
    assert store.versions("g") == ["000001"]  # nothing written
    calibrate_stream(store, "g", gaussian(1109, seed=2), trim_fraction=0.1, write_report=False)


def test_missing_values_are_dropped_and_counted(store: ArtifactStore) -> None:
    data = gaussian(1200, seed=3)
    data["x0"][:7] = np.nan
    report = calibrate_stream(store, "g", data, write_report=False)
    assert (report.n_records, report.n_dropped_missing, report.n_scores) == (1200, 7, 1193)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("os"), r"lacks column\(s\) \['os'\]"),
        (
            lambda d: d.update(cpu=np.array(["high"] * len(d["os"]), dtype=object)),
            r"^row 0, column 'cpu': expected a number, got 'high' \(the model .* expects numbers",
        ),
        (
            lambda d: d.update(os=np.ones(len(d["os"]))),
            r"column 'os' holds numbers but the model .* expects text",
        ),
        (lambda d: d["cpu"].__setitem__(5, np.inf), r"column 'cpu', row 5: inf"),
    ],
)
def test_schema_mismatch_is_refused_naming_the_column(
    store: ArtifactStore, change: object, message: str
) -> None:
    data = mixed(1500, seed=4)
    change(data)  # type: ignore[operator]
    with pytest.raises(CalibrationDataError, match=message):
        calibrate_stream(store, "m", data, write_report=False)
    assert store.versions("m") == ["000001"]


def test_the_training_data_itself_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(CalibrationDataError, match="training data"):
        calibrate_stream(store, "g", training_columns("gauss"), write_report=False)


def test_trim_removes_a_few_gross_anomalies_from_the_hold_out(store: ArtifactStore) -> None:
    clean = gaussian(3000, seed=5)
    dirty = {"x0": np.concatenate([clean["x0"], np.full(30, 8.0)])}
    levels = {"warning": 0.01}
    reference = calibrate_stream(store, "g", clean, levels=levels, write_report=False)
    polluted = calibrate_stream(store, "g", dirty, levels=levels, write_report=False)
    trimmed = calibrate_stream(
        store, "g", dirty, levels=levels, trim_fraction=0.01, write_report=False
    )
    # The 30 points at x = 8 sit at the rank-30 threshold and drag it far down...
    assert polluted.levels[0].threshold < reference.levels[0].threshold - 10
    # ...trimming the lowest 1% drops exactly them: the clean threshold again.
    assert (trimmed.n_trimmed, trimmed.n_scores) == (30, 3000)
    assert trimmed.levels[0].threshold == reference.levels[0].threshold
    cal = store.load("g").manifest.calibration
    assert cal is not None and cal.trim_fraction == 0.01 and cal.n_trimmed == 30


def labelled(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=2000), rng.uniform(3.0, 6.0, 40)])
    label = np.concatenate([np.zeros(2000), np.ones(40)])
    return {"x0": x, "label": label}


def test_labels_give_metrics_and_anomalies_stay_out_of_calibration(
    store: ArtifactStore,
) -> None:
    data = labelled(6)
    report = calibrate_stream(store, "g", data, label_column="label", write_report=False)
    assert report.n_scores == 2000
    assert report.metrics is not None
    assert (report.metrics.n_anomalies, report.metrics.n_normal) == (40, 2000)

    scores = scores_of(store, "g", data)
    is_anomaly = data["label"] == 1
    pos, neg = scores[is_anomaly], scores[~is_anomaly]
    mann_whitney = np.mean(pos[:, None] < neg[None, :]) + 0.5 * np.mean(pos[:, None] == neg)
    assert report.metrics.roc_auc is not None
    assert report.metrics.roc_auc == pytest.approx(mann_whitney, abs=1e-9)
    assert report.metrics.roc_auc > 0.95
    assert report.metrics.pr_auc is not None and report.metrics.pr_auc > 0.5
    for level in report.levels:
        flagged = scores < level.threshold
        assert level.recall == pytest.approx(np.sum(flagged & is_anomaly) / 40)
        assert level.precision == pytest.approx(np.sum(flagged & is_anomaly) / np.sum(flagged))
    neg_sorted = np.sort(neg)
    assert report.levels[0].threshold == pytest.approx(neg_sorted[math.floor(0.01 * 2001) - 1])


def test_text_labels_and_bad_labels(store: ArtifactStore) -> None:
    data = labelled(7)
    words = np.empty(len(data["label"]), dtype=object)
    words[:] = ["anomaly" if v else "normal" for v in data["label"]]
    report = calibrate_stream(
        store, "g", {**data, "label": words}, label_column="label", write_report=False
    )
    assert report.metrics is not None and report.metrics.n_anomalies == 40
    words[3] = "maybe"
    with pytest.raises(CalibrationDataError, match=r"label column 'label', row 3: .*'maybe'"):
        calibrate_stream(store, "g", {**data, "label": words}, label_column="label")


def test_report_png_and_json_land_outside_the_version_folders(store: ArtifactStore) -> None:
    report = calibrate_stream(store, "g", labelled(8), label_column="label")
    folder = store.root / "g" / "reports" / report.version
    png, js = folder / "calibration.png", folder / "calibration.json"
    assert report.report_png == str(png) and report.report_json == str(js)
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    body = json.loads(js.read_text())
    assert body["version"] == report.version
    assert [lv["threshold"] for lv in body["levels"]] == [lv.threshold for lv in report.levels]
    assert body["metrics"]["n_anomalies"] == 40
    assert sum(body["histogram"]["counts"]) == 2000
    assert store.versions("g") == ["000001", report.version]
    assert store.streams() == ["g", "m"]


# -- the command ----------------------------------------------------------------------------
def cli_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def calibrate_argv(store: ArtifactStore, stream: str, data: Path, *extra: str) -> list[str]:
    where = ["--store", str(store.root), "--stream", stream, "--data", str(data)]
    return ["calibrate", *where, *extra]


def test_cli_json_summary_and_report_dir(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "holdout.csv", gaussian(1500, seed=9))
    reports = str(tmp_path / "reports")
    fprs = ("--fpr", "0.05", "--fpr", "0.01")
    argv = calibrate_argv(store, "g", csv, *fprs, "--report-dir", reports)
    code, body = cli_json(capsys, [*argv, "--quiet", "--json"])
    assert code == 0 and body["ok"] is True
    result = body["streams"]["g"]
    assert result["version"] == "000002"
    assert [(lv["name"], lv["target_fpr"]) for lv in result["levels"]] == [
        ("warning", 0.05),
        ("critical", 0.01),
    ]
    assert (tmp_path / "reports" / "g" / "000002" / "calibration.png").is_file()
    cal = store.load("g").manifest.calibration
    assert cal is not None and [lv.threshold for lv in cal.levels] == [
        lv["threshold"] for lv in result["levels"]
    ]


def test_cli_named_levels_and_trim(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "holdout.csv", gaussian(1500, seed=10))
    levels = ("--level", "page=0.002", "--level", "ticket=0.02")
    argv = calibrate_argv(store, "g", csv, *levels, "--trim", "0.01", "--no-report", "--json")
    code, body = cli_json(capsys, argv)
    assert code == 0
    result = body["streams"]["g"]
    assert [lv["name"] for lv in result["levels"]] == ["ticket", "page"]
    assert (result["n_trimmed"], result["report_png"]) == (15, None)


def test_cli_failures_exit_non_zero_with_a_reason(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = write_csv(tmp_path / "small.csv", gaussian(300, seed=11))
    code, body = cli_json(capsys, calibrate_argv(store, "g", small, "--json"))
    assert code == 1 and body["ok"] is False
    assert "needs at least 999" in body["streams"]["g"]["error"]

    code, body = cli_json(capsys, calibrate_argv(store, "m", small, "--json"))
    assert code == 1 and "'cpu'" in body["streams"]["m"]["error"]

    code, body = cli_json(capsys, calibrate_argv(store, "nope", small, "--json"))
    assert code == 1 and "nope" in body["streams"]["nope"]["error"]

    both = ["calibrate", "--store", str(store.root), "--data", str(small)]
    assert main([*both, "--fpr", "0.1", "--level", "a=0.1"]) == 2
    assert "either --fpr or --level" in capsys.readouterr().err
    assert store.versions("g") == ["000001"] and store.versions("m") == ["000001"]


def test_cli_every_stream_of_the_config_with_per_stream_data(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "streams.toml"
    config.write_text(
        f'store = "{store.root}"\n'
        '[streams.g]\nsource = "train-g.csv"\nlabel_column = "label"\n'
        '[streams.m]\nsource = "train-m.csv"\n'
    )
    holdout = tmp_path / "holdout"
    write_csv(holdout / "g.csv", labelled(12))
    for i, part in enumerate((mixed(800, seed=13), mixed(800, seed=14))):
        write_csv(holdout / "m" / f"part{i}.csv", part)  # a folder of files
    code, body = cli_json(
        capsys,
        ["calibrate", "--config", str(config), "--data", str(holdout), "--json", "--no-report"],
    )
    assert code == 0, body
    assert body["streams"]["g"]["metrics"]["n_anomalies"] == 40  # label column from config
    assert body["streams"]["m"]["n_scores"] == 1600
    assert store.versions("m") == ["000001", "000002"]
