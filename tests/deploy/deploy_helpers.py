"""Shared helpers of the deploy tests: paths, external tools, PromQL metric names."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
KUBERNETES = DEPLOY / "kubernetes"
PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
INSTALL_SCRIPT = REPO / "scripts" / "install_test_tools.sh"
VENV_BIN = Path(sys.executable).parent


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@functools.cache
def _install_tools() -> tuple[bool, str]:
    """Run scripts/install_test_tools.sh once per session: (ok, output)."""
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, env=env, timeout=900
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


def require_tool(name: str) -> str:
    """Path of an external tool, installing it with scripts/install_test_tools.sh if missing.

    Skips only where the install cannot work here (no apt-get / not root) and not in CI; in
    CI a missing tool is a failure.
    """
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if found:
        return found
    ok, output = _install_tools()
    found = shutil.which(name) or shutil.which(name, path=str(VENV_BIN))
    if found:
        return found
    reason = f"{name} unavailable; scripts/install_test_tools.sh said:\n{output[-2000:]}"
    cannot_install = shutil.which("apt-get") is None or (
        os.geteuid() != 0 and not shutil.which("sudo")
    )
    if cannot_install and not os.environ.get("CI"):
        pytest.skip(f"cannot install tools here (needs apt-get as root): {reason}")
    pytest.fail(reason if ok else f"install failed: {reason}")


# -- PromQL ---------------------------------------------------------------------------------
PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_TEMPLATE_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_OFFSET = re.compile(r"\boffset\s+-?[\w.]+")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][\w:]*)")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels removed).

    Grafana's `label_values(metric, label)` variable queries give `metric`.
    """
    lv = _LABEL_VALUES.match(expr)
    if lv:
        return {lv.group(1)}
    s = _STRING.sub(" ", expr)
    s = _TEMPLATE_VAR.sub(" ", s)
    s = _MATCHERS.sub(" ", s)
    s = _RANGE.sub(" ", s)
    s = _LABEL_LIST.sub(" ", s)
    s = _OFFSET.sub(" ", s)
    names = set()
    for match in _IDENT.finditer(s):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names


def _sample_names(name: str, kind: str) -> set[str]:
    """Series names the text exposition format writes for a metric family."""
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind in ("histogram", "gaugehistogram"):
        return {
            f"{name}_bucket",
            f"{name}_count",
            f"{name}_sum",
            f"{name}_created",
            f"{name}_gcount",
            f"{name}_gsum",
        }
    if kind == "summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "info":
        return {f"{name}_info"}
    return {name}


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Every series name the service exports, read from service.metrics' real registry."""
    from densitywatch.service.metrics import (
        ServiceMetrics,  # the service's code is the source of truth
    )
    from densitywatch.service.settings import ServiceSettings

    metrics = ServiceMetrics(max_streams=ServiceSettings().metrics_max_streams)
    names: set[str] = set()
    for family in metrics.registry.collect():
        names |= _sample_names(family.name, family.type)
    return frozenset(names)
