"""Every benchmark's markdown names the command line that produced it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import benchmarks.load.__main__ as load
import benchmarks.serving.__main__ as serving
from benchmarks.common import command_line, commands_markdown


def test_command_line_quotes_what_the_shell_would_split() -> None:
    assert command_line("benchmarks.load", []) == "python -m benchmarks.load"
    assert (
        command_line("benchmarks.detection", ["--out", "my results", "--datasets", "a;b"])
        == "python -m benchmarks.detection --out 'my results' --datasets 'a;b'"
    )


def test_commands_section_lists_the_commands_in_order() -> None:
    assert commands_markdown(["python -m a", "python -m b"]) == [
        "## Commands",
        "",
        "Run from the repository root, in this order:",
        "",
        "```sh",
        "python -m a",
        "python -m b",
        "```",
    ]
    assert commands_markdown(["python -m a"])[2] == "Run from the repository root:"


def _load_result(**extra: Any) -> dict[str, Any]:
    ms = {"p50": 1.0, "p99": 2.0, "p999": 3.0}
    return {
        "requests": 10,
        "valid_requests": 8,
        "invalid_requests": 2,
        "errors_on_valid_calls": 0,
        "invalid_codes": {"INVALID_ARGUMENT": 2},
        "latency_ms": ms,
        "throughput_rps": 5.0,
        "rss_mb": {"start": 100.0, "end": 101.0},
        "rss_within_bound": True,
        "duration_s": 2.0,
        "clients": 4,
        "windows": [],
        "back_pressure": {
            "flood_calls": 3,
            "points_per_call": 5000,
            "queue_limit_points": 20000,
            "resource_exhausted": 1,
            "other_errors": 0,
            "rejection_latency_ms": ms,
            "recovered_latency_ms": ms,
        },
        "commit": "abc",
        "machine": {"cpu_count": 2, "cpu": "test CPU"},
        **extra,
    }


def test_load_markdown_ends_with_its_command() -> None:
    command = "python -m benchmarks.load --duration-s 2 --clients 4 --out /tmp/x"
    md = load.markdown(_load_result(command=command))
    assert md.endswith(f"## Commands\n\nRun from the repository root:\n\n```sh\n{command}\n```\n")
    assert "## Commands" not in load.markdown(_load_result())  # results from before the field


def _serving_summary(**extra: Any) -> dict[str, Any]:
    cell = {"points_per_s": 1.0, "calls_per_s": 1.0, "p50_ms": 1.0, "p99_ms": 2.0}
    details: dict[str, Any] = {key: cell for key, _ in serving.ROWS}
    details |= {"iforest_points_per_s": 1.0, "raw_points_per_s_batch_8192": 1.0}
    return {
        "details": details,
        "ratios": {"batched_served_over_raw": 0.9},
        "targets": {"batched_served_over_raw": 0.7},
        "latency_ms": {"single_1_client_p99": 2.0},
        "errors": 0,
        "commit": "abc",
        "machine": {"cpu": "test CPU", "cpus_available": 2},
        "protocol": {"rounds": 1},
        **extra,
    }


def test_serving_records_the_command_line_it_was_started_with(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(
        seconds: float, out: Path | None, rounds: int, command: str | None = None
    ) -> dict[str, Any]:
        seen.update(seconds=seconds, rounds=rounds, command=command)
        return _serving_summary(command=command)

    monkeypatch.setattr(serving, "run", fake_run)
    serving.main(["--seconds", "0.5", "--rounds", "2", "--out", "/tmp/x"])
    command = "python -m benchmarks.serving --seconds 0.5 --rounds 2 --out /tmp/x"
    assert seen == {"seconds": 0.5, "rounds": 2, "command": command}
    md = capsys.readouterr().out
    assert f"## Commands\n\nRun from the repository root:\n\n```sh\n{command}\n```\n" in md
    assert "## Commands" not in serving.markdown(_serving_summary())
