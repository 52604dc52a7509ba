"""Client + server smoke test of an installed densitywatch, for scripts/check_compat.sh.

    python scripts/compat/smoke.py [--workdir DIR]

With the interpreter of the environment under test: prints the resolved versions of the
packages the API depends on, imports `densitywatch.client` (any warning fails: a protobuf or
grpcio version mismatch warns or raises there), trains and calibrates a tiny stream with the
real commands (`densitywatch train`, `densitywatch calibrate`), starts `densitywatch serve`,
and checks health, reflection, ListStreams, Score, ScoreStream and a typed error over gRPC.
Prints one line per check and exits 1 when any fails.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = [
    "protobuf",
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "numpy",
    "pydantic",
    "pydantic-settings",
    "torch",
    "tritonclient",
]
STREAM = "hosts"
OS_VOCAB = ["linux", "windows", "mac"]
SERVE_TIMEOUT_S = 120.0
SERVICE = "densitywatch.v1.DensityWatch"


class SmokeError(RuntimeError):
    """A check failed; the message says what was expected and what came back."""


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def import_client() -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import densitywatch.client  # noqa: F401
    if caught:
        raise SmokeError("; ".join(f"{w.category.__name__}: {w.message}" for w in caught))
    return "imported without warnings"


# -- a tiny stream ---------------------------------------------------------------------------
def hosts(n: int, seed: int) -> list[tuple[float, float, str]]:
    """cpu ~ N(0.5, 0.1), mem = 4 cpu + noise, os mostly linux."""
    rng = np.random.default_rng(seed)
    cpu = rng.normal(0.5, 0.1, n)
    mem = 4 * cpu + rng.normal(0, 0.1, n)
    os_ = rng.choice(OS_VOCAB, size=n, p=[0.7, 0.2, 0.1])
    return [(float(c), float(m), str(o)) for c, m, o in zip(cpu, mem, os_, strict=True)]


def write_csv(path: Path, rows: list[tuple[float, float, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["cpu,mem,os", *(f"{c!r},{m!r},{o}" for c, m, o in rows)]
    path.write_text("\n".join(lines) + "\n")


def write_stream(workdir: Path) -> Path:
    """Training and calibration CSVs and the streams config; returns the config path."""
    write_csv(workdir / "train" / f"{STREAM}.csv", hosts(600, seed=1))
    write_csv(workdir / "calibration" / f"{STREAM}.csv", hosts(200, seed=2))
    config = workdir / "densitywatch.toml"
    config.write_text(
        f'store = "store"\n\n[streams.{STREAM}]\nsource = "train/{STREAM}.csv"\n'
        f'[streams.{STREAM}.types]\nos = "categorical"\n'
    )
    return config


def densitywatch(args: list[str], cwd: Path) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "densitywatch", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SmokeError(f"densitywatch {args[0]} exited {run.returncode}:\n{run.stderr[-3000:]}")
    return f"densitywatch {args[0]} ok"


# -- the server ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(workdir: Path) -> Iterator[str]:
    """`densitywatch serve` on loopback ports; yields its target, SIGTERMs it on exit."""
    port = free_port()
    env = {
        **os.environ,
        "DENSITYWATCH_MODEL_STORE": str(workdir / "store"),
        "DENSITYWATCH_GRPC_HOST": "127.0.0.1",
        "DENSITYWATCH_GRPC_PORT": str(port),
        "DENSITYWATCH_METRICS_HOST": "127.0.0.1",
        "DENSITYWATCH_METRICS_PORT": str(free_port()),
        "DENSITYWATCH_GRACE_PERIOD_S": "2",
    }
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "densitywatch", "serve"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_serving(f"127.0.0.1:{port}", process, log_path)
        yield f"127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_serving(target: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise SmokeError(f"densitywatch serve exited {process.returncode}:\n{tail}")
        # A channel per attempt: a channel whose first connection was refused backs off
        # (up to two minutes on older grpcio) and would miss the server coming up.
        with grpc.insecure_channel(target) as channel, contextlib.suppress(grpc.RpcError):
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace")[-3000:]
    raise SmokeError(f"densitywatch serve not SERVING after {SERVE_TIMEOUT_S:.0f} s:\n{tail}")


# -- checks over gRPC ------------------------------------------------------------------------
def check_health(target: str) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise SmokeError(f"health of {SERVICE}: {reply.status}, expected SERVING")
    return f"{SERVICE} SERVING"


def check_reflection(target: str) -> str:
    import grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(target) as channel:
        services = list(ProtoReflectionDescriptorDatabase(channel).get_services())
    if SERVICE not in services:
        raise SmokeError(f"reflection lists {services}, not {SERVICE}")
    return f"lists {len(services)} services"


def check_streams(target: str) -> str:
    from densitywatch.client import Client

    with Client(target) as client:
        streams = {s.name: s for s in client.list_streams()}
    if STREAM not in streams or not streams[STREAM].levels:
        raise SmokeError(f"ListStreams: {sorted(streams)}; expected a calibrated {STREAM!r}")
    levels = ", ".join(f"{lv.name} {lv.target_fpr:g}" for lv in streams[STREAM].levels)
    return f"{STREAM} calibrated ({levels})"


def score_points() -> list[dict[str, Any]]:
    """Six normal hosts, then two whose memory is far off their cpu."""
    normal = [{"cpu": c, "mem": m, "os": o} for c, m, o in hosts(6, seed=3)]
    odd = [{"cpu": 0.5, "mem": 9.0, "os": "linux"}, {"cpu": 0.2, "mem": 6.0, "os": "mac"}]
    return normal + odd


def check_score(target: str) -> str:
    from densitywatch.client import Client

    points = score_points()
    with Client(target) as client:
        result = client.score(STREAM, points, explain=True)
    normal, odd = result.log_prob[:-2], result.log_prob[-2:]
    if not (np.all(np.isfinite(result.log_prob)) and odd.max() < normal.min()):
        raise SmokeError(f"log p normal {normal.round(2)}, odd {odd.round(2)}: odd not lowest")
    if "normal" in result.level[-2:] or result.top_features is None:
        raise SmokeError(
            f"odd points' levels {result.level[-2:]}, explained: {result.top_features}"
        )
    if not np.all((result.p_value > 0) & (result.p_value <= 1)):
        raise SmokeError(f"p-values outside (0, 1]: {result.p_value}")
    return f"{len(points)} points, model {result.model_version}, odd ones {result.level[-2:]}"


def check_score_stream(target: str) -> str:
    from densitywatch.client import Client

    points = score_points()
    with Client(target) as client:
        results = list(client.score_stream(STREAM, [points[:4], points[4:]]))
        whole = client.score(STREAM, points)
    streamed = np.concatenate([r.log_prob for r in results])
    if not np.allclose(streamed, whole.log_prob):
        raise SmokeError(f"ScoreStream {streamed} != Score {whole.log_prob}")
    return f"{len(results)} batches, same scores as Score"


def check_typed_error(target: str) -> str:
    from densitywatch.client import Client
    from densitywatch.errors import StreamNotFoundError

    with Client(target) as client:
        try:
            client.score("no-such-stream", score_points())
        except StreamNotFoundError:
            return "unknown stream raises StreamNotFoundError"
    raise SmokeError("scoring an unknown stream did not raise StreamNotFoundError")


# -- main ------------------------------------------------------------------------------------
class Checks:
    """Runs checks, printing PASS/FAIL per check; remembers failures."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except Exception as e:
            self.failed.append(name)
            print(f"  FAIL {name}: {type(e).__name__}: {e}", flush=True)
            return False
        print(f"  PASS {name}: {detail}", flush=True)
        return True


def run(workdir: Path) -> int:
    checks = Checks()
    print("  versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), flush=True)
    if not checks("import densitywatch.client", import_client):
        return 1
    config = write_stream(workdir)
    train = ["train", "--config", str(config), "--max-steps", "150", "--threads", "1", "--quiet"]
    calibrate = ["calibrate", "--config", str(config), "--data", str(workdir / "calibration")]
    calibrate += ["--fpr", "0.05", "--fpr", "0.02", "--no-report", "--quiet"]
    if not (
        checks("train", lambda: densitywatch(train, workdir))
        and checks("calibrate", lambda: densitywatch(calibrate, workdir))
    ):
        return 1
    with serving(workdir) as target:
        checks("health", lambda: check_health(target))
        checks("reflection", lambda: check_reflection(target))
        checks("ListStreams", lambda: check_streams(target))
        checks("Score", lambda: check_score(target))
        checks("ScoreStream", lambda: check_score_stream(target))
        checks("typed error", lambda: check_typed_error(target))
    return 1 if checks.failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="densitywatch-smoke-") as tmp:
        return run(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
