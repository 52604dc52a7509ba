"""The `densitywatch` entry point: one command, and only its own side's modules loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from densitywatch.cli import COMMANDS, main

PROBE = """
import sys
from densitywatch.cli import main
try:
    main([{command!r}, "--help"])
except SystemExit:
    pass
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"training", "service", "sklearn"}}))
"""


@pytest.mark.parametrize(
    ("command", "loaded"),
    [("serve", "['service']"), ("score", "['service']"), ("train", "['training']")],
)
def test_a_command_loads_only_its_side(command: str, loaded: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == loaded


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
