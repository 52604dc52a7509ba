"""Serving benchmark: raw forward vs served Score/ScoreStream, single-point latency against
a bare gRPC echo server with the same message shapes, dynamic batching on/off, and the
default model's raw throughput vs scikit-learn's IsolationForest.

    python -m benchmarks.serving [--seconds 2] [--out benchmarks/results]

Servers run as subprocesses (`python -m densitywatch serve`, and the echo server), the
clients in this process, so client and server do not share a GIL.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.common import git_commit, machine_info, write_results
from density.artifact import ArtifactStore, fingerprint
from densitywatch.client import Client
from protos.densitywatch.v1 import densitywatch_pb2 as pb
from training.calibrate import calibrate_encoded
from training.fit import Capacity, FitConfig, default_capacities, fit
from training.schema import infer_schema_from_matrix

N_FEATURES = 10
STREAM = "bench"


def make_data(n: int, seed: int) -> np.ndarray:
    """Correlated Gaussian features (a plausible metrics stream)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 3))
    mix = rng.normal(size=(3, N_FEATURES))
    return base @ mix + 0.3 * rng.normal(size=(n, N_FEATURES))


def build_store(root: Path) -> tuple[Any, np.ndarray]:
    """The default model for a 20k-row stream (the default capacity grid's choice for that
    size), trained briefly: throughput depends on the shape, not the weights."""
    x = make_data(30_000, 0)
    schema = infer_schema_from_matrix(x[:20_000])
    capacity: Capacity = default_capacities(20_000, N_FEATURES)[-1]
    result = fit(
        schema,
        schema.encode(x[:20_000]),
        FitConfig(capacities=[capacity], max_steps=60, show_progress=False),
    )
    info = result.training_info(fingerprint(x), seed=0)
    store = ArtifactStore(root)
    artifact = store.write(result.model, result.manifest(STREAM, info))
    calibrate_encoded(store, artifact, x[20_000:])
    return store.load(STREAM), x


def raw_points_per_s(model: Any, x: np.ndarray, batch: int, seconds: float) -> float:
    xb = torch.from_numpy(np.ascontiguousarray(x[:batch]))
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - start < seconds:
            model.log_prob(xb)
            n += batch
    return n / (time.perf_counter() - start)


def iforest_points_per_s(x: np.ndarray, seconds: float) -> float:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=0, n_jobs=1).fit(x[:20_000])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        forest.score_samples(x[20_000:])
        n += len(x) - 20_000
    return n / (time.perf_counter() - start)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    end = time.monotonic() + 120
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        while time.monotonic() < end:
            try:
                if "echo" in cmd[-3]:
                    grpc.channel_ready_future(ch).result(timeout=1)
                    return proc
                r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return proc
            except grpc.RpcError:
                pass
            except grpc.FutureTimeoutError:
                pass
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server {cmd} did not start")


def serve(store: Path, batching: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {
        "DENSITYWATCH_BATCHING_ENABLED": str(batching).lower(),
        "DENSITYWATCH_GRPC_HOST": "127.0.0.1",
        "DENSITYWATCH_METRICS_PORT": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "densitywatch",
        "serve",
        "--store",
        str(store),
        "--port",
        str(port),
    ]
    return start(cmd, env, port), port


def echo() -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.serving.echo", str(port), "64"]
    return start(cmd, {}, port), port


def load(call: Callable[[], int], clients: int, seconds: float) -> dict[str, float]:
    """Run `call` (returns points scored) from `clients` threads; throughput and latency."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    points = [0] * clients
    errors = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                points[i] += call()
            except Exception:
                errors[i] += 1
            latencies[i].append(time.perf_counter() - t)

    for _ in range(min(50, int(20 / max(clients, 1)) + 1)):  # warm-up
        call()
    start_t = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start_t
    lat = np.concatenate([np.asarray(v) for v in latencies]) * 1000
    return {
        "calls_per_s": len(lat) / elapsed,
        "points_per_s": sum(points) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": int(sum(errors)),
    }


def score_call(client: Client, request: pb.ScoreRequest) -> Callable[[], int]:
    def call() -> int:
        return len(client.stub.Score(request, timeout=30).log_prob)

    return call


def stream_points_per_s(client: Client, request: pb.ScoreRequest, seconds: float) -> dict:
    n = 0
    start_t = time.perf_counter()

    def requests():  # type: ignore[no-untyped-def]
        while time.perf_counter() - start_t < seconds:
            yield request

    for response in client.stub.ScoreStream(requests(), timeout=seconds + 30):
        n += len(response.log_prob)
    return {"points_per_s": n / (time.perf_counter() - start_t), "errors": 0}


def run(seconds: float, out: Path | None) -> dict[str, Any]:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="dw-bench-"))
    artifact, x = build_store(tmp / "store")
    model = artifact.model.fold()
    raw = {f"batch_{b}": raw_points_per_s(model, x, b, seconds) for b in (1, 16, 256)}
    raw_big = raw_points_per_s(model, x, 8192, seconds)
    iforest = iforest_points_per_s(x, seconds)
    one = pb.ScoreRequest(stream=STREAM, points=pb.Points(numbers=x[0].tolist(), count=1))
    batch = pb.ScoreRequest(
        stream=STREAM, points=pb.Points(numbers=x[:256].ravel().tolist(), count=256)
    )
    results: dict[str, Any] = {
        "raw_points_per_s": raw,
        "raw_points_per_s_batch_8192": raw_big,
        "iforest_points_per_s": iforest,
    }
    procs: list[subprocess.Popen] = []
    try:
        proc, port = echo()
        procs.append(proc)
        with Client(f"127.0.0.1:{port}") as c:
            results["echo_single_1_client"] = load(score_call(c, one), 1, seconds)
            results["echo_single_32_clients"] = load(score_call(c, one), 32, seconds)
        for batching in (True, False):
            proc, port = serve(tmp / "store", batching)
            procs.append(proc)
            key = "batching_on" if batching else "batching_off"
            with Client(f"127.0.0.1:{port}") as c:
                if batching:
                    results["served_batch_256_1_client"] = load(score_call(c, batch), 1, seconds)
                    results["served_stream_256"] = stream_points_per_s(c, batch, seconds)
                    results["served_single_1_client"] = load(score_call(c, one), 1, seconds)
                results[f"served_single_32_clients_{key}"] = load(score_call(c, one), 32, seconds)
            proc.terminate()
            proc.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    summary = summarise(results)
    if out is not None:
        write_results("serving", summary, markdown(summary), out)
    return summary


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    single_1 = r["served_single_1_client"]
    on, off = r["served_single_32_clients_batching_on"], r["served_single_32_clients_batching_off"]
    errors = sum(v.get("errors", 0) for v in r.values() if isinstance(v, dict))
    return {
        "ratios": {
            "batched_served_over_raw": r["served_batch_256_1_client"]["points_per_s"]
            / r["raw_points_per_s"]["batch_256"],
            "stream_served_over_raw": r["served_stream_256"]["points_per_s"]
            / r["raw_points_per_s"]["batch_256"],
            "single_served_over_echo": single_1["calls_per_s"]
            / r["echo_single_1_client"]["calls_per_s"],
            "single_served_over_echo_32_clients": on["calls_per_s"]
            / r["echo_single_32_clients"]["calls_per_s"],
            "dynamic_batching_gain_32_clients": on["calls_per_s"] / off["calls_per_s"],
            "raw_over_iforest": r["raw_points_per_s_batch_8192"] / r["iforest_points_per_s"],
        },
        "latency_ms": {
            "single_1_client_p50": single_1["p50_ms"],
            "single_1_client_p99": single_1["p99_ms"],
            "echo_1_client_p50": r["echo_single_1_client"]["p50_ms"],
            "echo_1_client_p99": r["echo_single_1_client"]["p99_ms"],
            "single_32_clients_batching_on_p50": on["p50_ms"],
            "single_32_clients_batching_on_p99": on["p99_ms"],
            "single_32_clients_batching_off_p50": off["p50_ms"],
            "single_32_clients_batching_off_p99": off["p99_ms"],
            "batch_256_p50": r["served_batch_256_1_client"]["p50_ms"],
            "batch_256_p99": r["served_batch_256_1_client"]["p99_ms"],
        },
        "targets": {
            "batched_served_over_raw": 0.7,
            "single_served_over_echo": 0.6,
            "single_1_client_p99_ms": 5.0,
            "errors": 0,
        },
        "errors": int(errors),
        "details": r,
        "machine": machine_info(),
        "commit": git_commit(),
    }


def markdown(s: dict[str, Any]) -> str:
    d = s["details"]
    rows = [
        ("raw forward, batch 1", d["raw_points_per_s"]["batch_1"], None, None),
        ("raw forward, batch 16", d["raw_points_per_s"]["batch_16"], None, None),
        ("raw forward, batch 256", d["raw_points_per_s"]["batch_256"], None, None),
        ("IsolationForest.score_samples", d["iforest_points_per_s"], None, None),
    ]
    for key, label in [
        ("served_batch_256_1_client", "served Score, 256 points/call, 1 client"),
        ("served_single_1_client", "served Score, 1 point, 1 client"),
        ("echo_single_1_client", "echo, 1 point, 1 client"),
        ("served_single_32_clients_batching_on", "served Score, 1 point, 32 clients, batching on"),
        (
            "served_single_32_clients_batching_off",
            "served Score, 1 point, 32 clients, batching off",
        ),
        ("echo_single_32_clients", "echo, 1 point, 32 clients"),
    ]:
        v = d[key]
        rows.append((label, v["points_per_s"], v["p50_ms"], v["p99_ms"]))
    rows.append(
        (
            "served ScoreStream, 256 points/message",
            d["served_stream_256"]["points_per_s"],
            None,
            None,
        )
    )
    lines = [
        "# Serving benchmark",
        "",
        f"Commit `{s['commit']}`, {s['machine']['cpu']} "
        f"({s['machine'].get('cpus_available')} CPUs available).",
        "",
        "| measurement | points/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for label, pps, p50, p99 in rows:
        lines.append(f"| {label} | {pps:,.0f} | {_ms(p50)} | {_ms(p99)} |")
    lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
    targets = s["targets"]
    for k, v in s["ratios"].items():
        lines.append(f"| {k} | {v:.2f} | {targets.get(k, '')} |")
    lines.append(f"| single_1_client_p99 (ms) | {s['latency_ms']['single_1_client_p99']:.2f} | 5 |")
    lines.append(f"| errors | {s['errors']} | 0 |")
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    summary = run(args.seconds, args.out)
    print(markdown(summary))


if __name__ == "__main__":
    main()
