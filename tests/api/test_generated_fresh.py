"""The committed generated gRPC code equals what scripts/gen_protos.sh produces now, and the
declared grpcio/protobuf ranges are the ones that code runs on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path("densitywatch") / "api" / "v1"
GENERATED = ["densitywatch_pb2.py", "densitywatch_pb2_grpc.py", "densitywatch_pb2.pyi"]
CANNOT_INSTALL_GENERATOR = 3  # gen_protos.sh's exit status when pip cannot get grpcio-tools


def generator_env() -> dict[str, str]:
    """This environment (pip's settings, HOME) without the test venv on PATH, so the script
    runs on PYTHON alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        env=generator_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode == CANNOT_INSTALL_GENERATOR:
        pytest.skip(f"the pinned grpcio-tools cannot be installed here:\n{run.stderr[-2000:]}")
    assert run.returncode == 0, run.stderr
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text()
        committed = (ROOT / PACKAGE / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen_protos.sh"


def test_generated_code_imports_as_a_package() -> None:
    from densitywatch.api.v1 import densitywatch_pb2, densitywatch_pb2_grpc

    assert densitywatch_pb2.DESCRIPTOR.package == "densitywatch.v1"
    assert hasattr(densitywatch_pb2_grpc, "DensityWatchStub")


def declared() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    return {r.name: r.specifier for r in requirements}


def lower_bound(specifier: SpecifierSet) -> str:
    (bound,) = [s.version for s in specifier if s.operator == ">="]
    return bound


def test_declared_grpc_packages_start_at_the_generator() -> None:
    """The _grpc module refuses a grpcio older than the grpcio-tools that wrote it."""
    grpc_code = (ROOT / PACKAGE / "densitywatch_pb2_grpc.py").read_text()
    generator = re.search(r"GRPC_GENERATED_VERSION = '([^']+)'", grpc_code)
    assert generator is not None
    deps = declared()
    for name in ("grpcio", "grpcio-health-checking", "grpcio-reflection"):
        assert lower_bound(deps[name]) == generator.group(1), name


def test_declared_protobuf_is_the_range_the_gencode_supports() -> None:
    """Runtime >= the gencode's version, and below gencode major + 2 (protobuf's
    cross-version guarantee: gencode of major V runs on runtimes V and V+1)."""
    pb2 = (ROOT / PACKAGE / "densitywatch_pb2.py").read_text()
    gencode = re.search(r"# Protobuf Python Version: (\d+)\.(\d+)\.(\d+)", pb2)
    assert gencode is not None
    major = int(gencode.group(1))
    protobuf = declared()["protobuf"]
    assert lower_bound(protobuf) == ".".join(gencode.groups())
    assert f"{major + 1}.999" in protobuf
    assert f"{major + 2}.0" not in protobuf
