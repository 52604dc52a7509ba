"""The committed generated gRPC code equals what scripts/gen_protos.sh produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["densitywatch_pb2.py", "densitywatch_pb2_grpc.py", "densitywatch_pb2.pyi"]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    for name in GENERATED:
        fresh = (tmp_path / "protos" / "densitywatch" / "v1" / name).read_text()
        committed = (ROOT / "protos" / "densitywatch" / "v1" / name).read_text()
        assert fresh == committed, f"{name} is stale: run scripts/gen_protos.sh"
    for package in ("protos", "protos/densitywatch", "protos/densitywatch/v1"):
        assert (ROOT / package / "__init__.py").is_file()


def test_generated_code_imports_as_a_package() -> None:
    from protos.densitywatch.v1 import densitywatch_pb2, densitywatch_pb2_grpc

    assert densitywatch_pb2.DESCRIPTOR.package == "densitywatch.v1"
    assert hasattr(densitywatch_pb2_grpc, "DensityWatchStub")
