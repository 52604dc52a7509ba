"""A version that cannot be written fails its stream, not the run: the other streams are
trained and calibrated, the exit status is 1 and the JSON says which stream failed. The
disk is the system edge here: writes are made to fail where safetensors and the OS write."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import SafetensorError

import densitywatch.density.artifact as artifact_module
from densitywatch.cli import main
from densitywatch.density.artifact import WEIGHTS, ArtifactStore

FAST = ["--max-steps", "20", "--quiet", "--json"]


def _write_streams(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines = ['store = "store"']
    for name in ("a", "b"):
        np.savetxt(data / f"{name}.csv", rng.normal(size=(300, 2)), delimiter=",",
                   header="x,y", comments="")  # fmt: skip
        lines += [f"[streams.{name}]", f'source = "data/{name}.csv"']
    config = root / "densitywatch.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def failing_for(stream: str, error: Exception) -> Callable[..., None]:
    """safetensors' save_file, failing for one stream's folder."""
    real = artifact_module.save_file

    def save_file(state: Any, filename: str, *args: Any, **kwargs: Any) -> None:
        if Path(filename).parent.parent.name == stream:
            raise error
        real(state, filename, *args, **kwargs)

    return save_file


ERRORS = {
    "ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
    "SafetensorError": SafetensorError("Error while serializing: IoError"),
}


@pytest.mark.parametrize("error", list(ERRORS))
def test_a_failed_write_in_train_fails_only_its_stream(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: str,
) -> None:
    config = _write_streams(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(artifact_module, "save_file", failing_for("a", ERRORS[error]))
    assert main(["train", "--config", str(config), *FAST]) == 1
    streams = json.loads(capsys.readouterr().out)["streams"]
    assert streams["a"]["ok"] is False and streams["b"]["ok"] is True
    store = ArtifactStore(tmp_path / "store")
    assert store.versions("b") == ["000001"] and store.versions("a") == []
    assert not list((tmp_path / "store" / "a").glob(".tmp-*"))  # nothing half-written kept


@pytest.mark.parametrize("error", list(ERRORS))
def test_a_failed_write_in_calibrate_fails_only_its_stream(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: str,
) -> None:
    config = _write_streams(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(config), *FAST]) == 0
    capsys.readouterr()
    holdout = tmp_path / "holdout"
    holdout.mkdir()
    for name in ("a", "b"):
        np.savetxt(holdout / f"{name}.csv", np.random.default_rng(1).normal(size=(300, 2)),
                   delimiter=",", header="x,y", comments="")  # fmt: skip
    monkeypatch.setattr(artifact_module, "save_file", failing_for("a", ERRORS[error]))
    code = main(["calibrate", "--config", str(config), "--data", str(holdout),
                 "--fpr", "0.05", "--no-report", "--quiet", "--json"])  # fmt: skip
    assert code == 1
    streams = json.loads(capsys.readouterr().out)["streams"]
    assert streams["a"]["ok"] is False and "cannot write" in streams["a"]["error"]
    assert streams["b"]["ok"] is True
    assert ArtifactStore(tmp_path / "store").versions("b") == ["000001", "000002"]


def test_the_weights_reach_the_disk_before_the_version_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write_streams(tmp_path)
    monkeypatch.chdir(tmp_path)
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def rename(src: Any, dst: Any) -> None:
        events.append("rename")
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    assert main(["train", "--config", str(config), "--stream", "a", *FAST]) == 0
    assert f"fsync {WEIGHTS}" in events
    assert events.index(f"fsync {WEIGHTS}") < events.index("rename")
