"""Helpers shared by the benchmarks: machine and commit description, result files."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, OS, Python and library versions."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_available"] = len(os.sched_getaffinity(0))
    versions: dict[str, str] = {}
    for module in ("numpy", "sklearn", "torch", "pyod", "scipy"):
        try:
            versions[module] = str(__import__(module).__version__)
        except ImportError:
            continue
    info["versions"] = versions
    return info


def _git(*args: str) -> str:
    """stdout of a git command run in the repository, stripped; raises if it fails."""
    done = subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def git_commit() -> str:
    """HEAD commit, with `-dirty` when tracked files changed; `unknown` without git."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def command_line(module: str, argv: Sequence[str]) -> str:
    """The shell command `python -m module argv...`, quoted so that it can be pasted back."""
    return shlex.join(["python", "-m", module, *argv])


def commands_markdown(commands: Sequence[str]) -> list[str]:
    """Markdown lines of a `## Commands` section: the command lines that wrote a result."""
    intro = "Run from the repository root" + (", in this order:" if len(commands) > 1 else ":")
    return ["## Commands", "", intro, "", "```sh", *commands, "```"]


def write_results(
    name: str, data: dict[str, Any], markdown: str, out_dir: Path | None = None
) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` atomically into out_dir (default benchmarks/results)."""
    out = Path(out_dir) if out_dir is not None else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write(json_path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")
    atomic_write(md_path, markdown if markdown.endswith("\n") else markdown + "\n")
    return json_path, md_path


def atomic_write(path: Path, text: str) -> None:
    """Write text to path via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
