"""The training and calibration CLIs on malformed files: a clear error naming the file (and
line where there is one), a non-zero exit, and no partial artifact left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from densitywatch.cli import main
from densitywatch.density.artifact import ArtifactStore
from tests.service.service_support import hosts_data

FAST = ["--quiet", "--max-steps", "5"]
HEADER = "cpu,mem,conns,os"


def _lines(n: int, seed: int) -> list[str]:
    numbers, strings = hosts_data(n, seed)
    return [
        f"{a:.4f},{b:.4f},{int(c)},{s[0]}" for (a, b, c), s in zip(numbers, strings, strict=True)
    ]


MALFORMED = {
    "truncated.csv": ("\n".join([HEADER, *_lines(40, 1)]) + "\n0.51,2.0", "line 42: expected 4"),
    "empty.csv": ("", "empty file"),
    "header-only.csv": (HEADER + "\n", "no data rows"),
    "not-utf8.csv": (HEADER + "\n0.5,2.0,10,li\udcffnux\n", "not UTF-8"),
    "quote.csv": (HEADER + '\n0.5,2.0,10,"linux\n', "line 2: malformed CSV"),
}


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_train_on_a_malformed_file(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = MALFORMED[name]
    source = _write(tmp_path / name, text)
    config = tmp_path / "streams.toml"
    config.write_text(f'store = "store"\n[streams.s]\nsource = "{name}"\n')
    assert main(["train", "--config", str(config), *FAST]) == 1
    err = capsys.readouterr().err
    assert str(source.resolve()) in err and message in err
    assert not (tmp_path / "store").exists()  # nothing written, not even a stream folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    _write(folder / "train.csv", "\n".join([HEADER, *_lines(300, 2)]) + "\n")
    (folder / "streams.toml").write_text('store = "store"\n[streams.s]\nsource = "train.csv"\n')
    assert main(["train", "--config", str(folder / "streams.toml"), *FAST]) == 0
    return folder / "store"


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_calibrate_on_a_malformed_file(
    trained: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, message = MALFORMED[name]
    data = _write(tmp_path / name, text)
    args = ["calibrate", "--store", str(trained), "--stream", "s", "--data", str(data)]
    assert main([*args, "--quiet", "--no-report"]) == 1
    err = capsys.readouterr().err
    assert str(data) in err and message in err
    assert ArtifactStore(trained).versions("s") == ["000001"]  # no new version


def test_wrong_types_fail_naming_the_column(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _lines(1200, 3)
    lines[500] = "0.5,high,10,linux"  # text in a numeric column
    data = _write(tmp_path / "typed.csv", "\n".join([HEADER, *lines]) + "\n")
    args = ["calibrate", "--store", str(trained), "--stream", "s", "--data", str(data)]
    assert main([*args, "--quiet", "--no-report"]) == 1
    assert "column 'mem'" in capsys.readouterr().err
    assert ArtifactStore(trained).versions("s") == ["000001"]


def test_wrong_types_name_file_and_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _lines(1200, 3)
    lines[500] = "0.5,high,10,linux"
    data = _write(tmp_path / "typed.csv", "\n".join([HEADER, *lines]) + "\n")
    args = ["calibrate", "--store", str(trained), "--stream", "s", "--data", str(data)]
    main([*args, "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert f"{data} line 502, column 'mem': expected a number, got 'high'" in err
