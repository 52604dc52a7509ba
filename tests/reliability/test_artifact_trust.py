"""What the service may believe of a store: a manifest only about its own folder, weights it
can read, numbers in range, an architecture no larger than its weights, outputs that are
finite; and a failed version tried again once its files change, never on every poll."""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.cli import main
from densitywatch.client import Client
from densitywatch.density.artifact import (
    MANIFEST,
    WEIGHTS,
    ArtifactStore,
    load_artifact,
)
from densitywatch.density.calibration import calibrate
from densitywatch.errors import ArtifactCorruptError, CalibrationError, UsageError
from densitywatch.service.metrics import ServiceMetrics
from densitywatch.service.registry import Registry
from densitywatch.service.settings import ServiceSettings, load_settings
from tests.reliability.reliability_support import plant_version, write_signed_manifest
from tests.service.service_support import copy_store, make_settings, running_server

X = np.zeros((1, 2))


@pytest.fixture
def store(built_store: tuple[Path, dict[str, Any]], tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(copy_store(built_store[0], tmp_path / "store"))


def registry(store: ArtifactStore, trace: bool = False, **kwargs: Any) -> Registry:
    return Registry(store, ServiceMetrics(max_streams=8), trace=trace, **kwargs)


def serving(reg: Registry, stream: str) -> str | None:
    model = {s.name: s for s in reg.statuses()}[stream].model
    return None if model is None else model.version


def failures(reg: Registry, stream: str) -> float:
    value = reg.metrics.registry.get_sample_value(
        "densitywatch_model_load_failures_total", {"stream": stream}
    )
    return value or 0.0


# -- item 5: a manifest is about its own folder --------------------------------------------
def test_a_copied_stream_folder_is_neither_served_nor_calibrated(
    store: ArtifactStore, tmp_path: Path
) -> None:
    shutil.copytree(store.root / "alpha", store.root / "alpha2")
    with pytest.raises(ArtifactCorruptError, match="copied folder"):
        store.load("alpha2")
    reg = registry(store)
    reg.refresh()
    assert serving(reg, "alpha2") is None and serving(reg, "alpha") == "000002"
    detail = {s.name: s for s in reg.statuses()}["alpha2"].detail
    assert "copied folder" in detail and "'alpha'" not in detail  # no other tenant's name
    before = store.versions("alpha")
    holdout = tmp_path / "holdout.csv"
    np.savetxt(
        holdout,
        np.random.default_rng(0).normal(size=(300, 2)),
        delimiter=",",
        header="a,b",
        comments="",
    )
    code = main(["calibrate", "--store", str(store.root), "--stream", "alpha2",
                 "--data", str(holdout), "--no-report", "--quiet"])  # fmt: skip
    assert code == 1
    assert store.versions("alpha") == before  # no new version of alpha


def test_a_version_folder_copied_as_a_rollback_is_refused_once(store: ArtifactStore) -> None:
    reg = registry(store)
    reg.refresh()
    shutil.copytree(store.path("alpha", "000002"), store.path("alpha", "000003"))
    for _ in range(3):  # polls
        reg.refresh()
    assert serving(reg, "alpha") == "000002"
    assert failures(reg, "alpha") == 1  # refused once, not reloaded on every poll


@pytest.mark.parametrize("pin", ["../beta/000002", "2", "0000002", "00000²", ""])
def test_a_pin_must_be_a_six_digit_version(pin: str) -> None:
    with pytest.raises(ValidationError, match="six digits"):
        ServiceSettings(pinned={"alpha": pin})


def test_a_pin_must_name_a_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DENSITYWATCH_PINNED", json.dumps({"../beta": "000002"}))
    with pytest.raises(UsageError, match="DENSITYWATCH_PINNED"):
        load_settings()


def test_folders_that_are_not_six_ascii_digits_are_not_versions(store: ArtifactStore) -> None:
    for name in ("²", "00000²", "١٢٣٤٥٦", "12", "0000001"):
        (store.root / "alpha" / name).mkdir()
    (store.root / "²").mkdir()
    assert store.versions("alpha") == ["000001", "000002"]
    reg = registry(store)
    reg.refresh()  # neither crashes nor fails the stream
    assert serving(reg, "alpha") == "000002"


# -- item 6: readable weights, and a second chance once the files change --------------------
def test_weights_get_the_manifest_s_mode(store: ArtifactStore) -> None:
    old = os.umask(0o022)
    try:
        artifact = store.load("alpha")
        written = store.write(artifact.model, artifact.manifest)
    finally:
        os.umask(old)
    weights, manifest = (written.path / WEIGHTS).stat(), (written.path / MANIFEST).stat()
    assert weights.st_mode & 0o777 == manifest.st_mode & 0o777 == 0o644


def test_a_half_copied_version_loads_once_the_copy_is_finished(
    store: ArtifactStore, tmp_path: Path
) -> None:
    reg = registry(store)
    reg.refresh()
    full: dict[str, bytes] = {}

    def half(staged: Path) -> None:
        full["weights"] = (staged / WEIGHTS).read_bytes()
        (staged / WEIGHTS).write_bytes(full["weights"][: len(full["weights"]) // 2])

    version = plant_version(store, "alpha", tmp_path, half)
    reg.refresh()
    reg.refresh()
    assert serving(reg, "alpha") == "000002" and failures(reg, "alpha") == 1
    (store.path("alpha", version) / WEIGHTS).write_bytes(full["weights"])  # the copy ends
    reg.refresh()
    assert serving(reg, "alpha") == version


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_version_unreadable_for_its_mode_loads_once_fixed(
    store: ArtifactStore, tmp_path: Path
) -> None:
    reg = registry(store)
    reg.refresh()
    version = plant_version(store, "alpha", tmp_path, lambda p: (p / WEIGHTS).chmod(0))
    reg.refresh()
    assert serving(reg, "alpha") == "000002"
    (store.path("alpha", version) / WEIGHTS).chmod(0o644)
    reg.refresh()
    assert serving(reg, "alpha") == version


# -- item 7: no allocation before validation ------------------------------------------------
def _edit_manifest(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    body = json.loads((path / MANIFEST).read_text())
    edit(body)
    write_signed_manifest(path, body)


@pytest.mark.parametrize("width", [4000, 8000, 20000])
def test_an_architecture_larger_than_its_weights_is_refused_before_building(
    store: ArtifactStore, width: int
) -> None:
    path = store.path("alpha", "000002")
    _edit_manifest(path, lambda b: b["architecture"].update(hidden_width=width))
    start = time.perf_counter()
    with pytest.raises(ArtifactCorruptError):
        load_artifact(path)
    # Building 2 orderings x 4000^2 float32 weights and masks alone takes over a second.
    assert time.perf_counter() - start < 0.5


# -- item 9: numbers in range, outputs finite ---------------------------------------------
def _calibration(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda body: edit(body["calibration"])


BROKEN_MANIFESTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no quantiles": _calibration(lambda c: c.update(quantiles=[])),
    "one quantile": _calibration(lambda c: c.update(quantiles=[0.0])),
    "unsorted quantiles": _calibration(lambda c: c.update(quantiles=c["quantiles"][::-1])),
    "unsorted tail": _calibration(lambda c: c.update(tail=c["tail"][::-1])),
    "n_scores 2**70": _calibration(lambda c: c.update(n_scores=2**70)),
    "n_scores 0": _calibration(lambda c: c.update(n_scores=0)),
    "level normal": _calibration(lambda c: c["levels"][0].update(name="normal")),
    "levels twice": _calibration(lambda c: c.update(levels=c["levels"] * 2)),
    "fpr 1.5": _calibration(lambda c: c["levels"][0].update(target_fpr=1.5)),
    "epochs -1": lambda b: b["training"].update(epochs=-1),
    "n_train 2**70": lambda b: b["training"].update(n_train=2**70),
    "n_orderings 10**6": lambda b: b["architecture"].update(n_orderings=10**6),
}


@pytest.mark.parametrize("case", list(BROKEN_MANIFESTS))
def test_a_manifest_with_numbers_out_of_range_is_refused(store: ArtifactStore, case: str) -> None:
    path = store.path("alpha", "000002")
    _edit_manifest(path, BROKEN_MANIFESTS[case])
    with pytest.raises(ArtifactCorruptError, match="not a valid manifest"):
        load_artifact(path)


def test_a_non_finite_threshold_is_refused(store: ArtifactStore) -> None:
    path = store.path("alpha", "000002")
    # JSON has no NaN; Python's json writes and reads one, as a hand-edited file could hold.
    _edit_manifest(path, _calibration(lambda c: c["levels"][0].update(threshold=float("nan"))))
    with pytest.raises(ArtifactCorruptError, match="not a valid manifest"):
        load_artifact(path)


def test_broken_versions_leave_the_others_listed_and_served(
    store: ArtifactStore, tmp_path: Path
) -> None:
    """Before, one stream's epochs=-1 or n_scores=2**70 broke GetStream and ListStreams for
    every stream, and an empty quantile list made each Score of it INTERNAL."""
    for stream, case in (("alpha", "epochs -1"), ("beta", "no quantiles")):
        plant_version(store, stream, tmp_path, functools.partial(_spoiled, case=case))
    with (
        running_server(make_settings(store.root)) as server,
        Client(f"127.0.0.1:{server.port}") as client,
    ):
        listed = {s.name: s for s in client.list_streams()}
        assert listed["alpha"].model_version == listed["beta"].model_version == "000002"
        assert client.get_stream("alpha").model_version == "000002"
        assert len(client.score("beta", X).log_prob) == 1


def _spoiled(path: Path, case: str) -> None:
    _edit_manifest(path, BROKEN_MANIFESTS[case])


def _nan_weights(staged: Path) -> None:
    state = load_file(str(staged / WEIGHTS))
    state = {k: (v * np.nan if v.is_floating_point() else v) for k, v in state.items()}
    save_file(state, str(staged / WEIGHTS))
    write_signed_manifest(staged, json.loads((staged / MANIFEST).read_text()))


@pytest.mark.parametrize("trace", [False, True])
def test_a_version_with_nan_weights_never_serves(
    store: ArtifactStore, tmp_path: Path, trace: bool
) -> None:
    reg = registry(store, trace=trace)
    reg.refresh()
    plant_version(store, "alpha", tmp_path, _nan_weights)
    reg.refresh()
    assert serving(reg, "alpha") == "000002" and failures(reg, "alpha") == 1


def test_a_fresh_stream_with_nan_weights_is_failed_not_served(
    store: ArtifactStore, tmp_path: Path
) -> None:
    for version in store.versions("beta"):
        _nan_weights(store.path("beta", version))
    reg = registry(store)
    reg.refresh()
    status = {s.name: s for s in reg.statuses()}["beta"]
    assert status.model is None and status.state == pb.STREAM_STATE_FAILED
    assert "weights are broken" in status.detail


def test_normal_cannot_name_a_level() -> None:
    with pytest.raises(CalibrationError, match="reserved"):
        calibrate(-np.arange(1.0, 201.0), {"normal": 0.05})


def test_calibrate_refuses_level_normal_as_usage(
    store: ArtifactStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holdout = tmp_path / "holdout.csv"
    np.savetxt(holdout, np.zeros((300, 2)), delimiter=",", header="a,b", comments="")
    code = main(["calibrate", "--store", str(store.root), "--stream", "alpha",
                 "--data", str(holdout), "--level", "normal=0.05", "--quiet"])  # fmt: skip
    assert code == 2 and "reserved" in capsys.readouterr().err
