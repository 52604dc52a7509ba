"""The `densitywatch` entry point: one command, only its own side's modules loaded, and every
error mapped to one line and an exit code in one place."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from densitywatch.cli import COMMANDS, main

PROBE = """
import sys
from densitywatch.cli import main
try:
    main([{command!r}, "--help"])
except SystemExit:
    pass
heavy = ["densitywatch.training", "densitywatch.service", "sklearn", "torch"]
print(sorted(module for module in heavy if module in sys.modules))
"""


@pytest.mark.parametrize(
    ("command", "loaded"),
    [
        ("serve", ["densitywatch.service", "torch"]),
        ("score", ["densitywatch.training"]),
        ("train", ["densitywatch.training", "torch"]),
    ],
)
def test_a_command_loads_only_its_side(command: str, loaded: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == repr(loaded)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS)


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_usage_error_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DENSITYWATCH_CONFIG", raising=False)
    assert main(["sample", "--stream", "s", "-n", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "densitywatch sample: error: -n must be between 1 and 10000000, got 0\n"


def test_a_failure_is_exit_1_with_the_traceback_only_under_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sample", "--store", str(tmp_path), "--stream", "nosuch"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("densitywatch sample: error: ") and "nosuch" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["--debug", *args]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert main([*args, "--debug"]) == 1  # accepted after the command too
    assert "ArtifactNotFoundError" in capsys.readouterr().err


def test_an_unexpected_error_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import densitywatch.cli.sample as sample

    def boom(*args: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(sample, "open_store", boom)
    assert main(["sample", "--store", str(tmp_path), "--stream", "s"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: boom (rerun with --debug" in err


def test_json_failure_prints_the_one_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--config", str(tmp_path / "absent.toml"), "--json"]) == 2
    body = json.loads(capsys.readouterr().out)
    assert body["command"] == "train" and body["ok"] is False and body["streams"] == {}
    assert "absent.toml" in body["error"]


def test_config_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('store = "models"\n[streams.a]\nsource = "a.csv"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DENSITYWATCH_CONFIG", str(config))
    assert main(["train", "--json", "--quiet"]) == 1  # a.csv is absent: the stream fails
    body = json.loads(capsys.readouterr().out)
    assert list(body["streams"]) == ["a"] and body["streams"]["a"]["ok"] is False


SECRET = "s3cret-token-value-81f2"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DENSITYWATCH_AUTH_TOKENS", json.dumps(SECRET)),  # a JSON string, not a list
        ("DENSITYWATCH_AUTH_TOKENS", json.dumps({"ops": SECRET})),
        ("DENSITYWATCH_AUTH_TOKENS", f"[{SECRET}]"),  # not JSON at all
        ("DENSITYWATCH_AUTH_TOKENS", SECRET),
        ("DENSITYWATCH_PINNED", f"alpha={SECRET}"),
        ("DENSITYWATCH_PINNED", json.dumps({"alpha": [SECRET]})),
        ("DENSITYWATCH_QUEUE_LIMIT", SECRET),
    ],
)
def test_an_invalid_setting_is_one_line_exit_2_and_never_echoed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    for debug in ([], ["--debug"]):
        assert main([*debug, "serve", "--store", str(tmp_path), "--port", "0"]) == 2
        captured = capsys.readouterr()
        err = captured.err
        assert SECRET not in err + captured.out + caplog.text
        lines = err.splitlines()
        assert lines[0].startswith("densitywatch serve: error: ") and variable in lines[0]
        if not debug:
            assert len(lines) == 1, err
