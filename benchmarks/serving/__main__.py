"""Serving benchmark: raw forward vs served Score/ScoreStream, single-point latency against
a bare gRPC echo server with the same message shapes, dynamic batching on/off, and the
default model's raw throughput vs scikit-learn's IsolationForest.

    python -m benchmarks.serving [--seconds 1] [--rounds 9] [--out benchmarks/results]

"Raw forward" is the callable the server scores with: the model's frozen TorchScript trace
(`densitywatch.service.scorer.traced_log_p`); the eager module is measured beside it.

Servers run as subprocesses (`python -m densitywatch serve` with batching on, another with
it off, and the echo server), the clients in this process, so client and server do not
share a GIL. Every measurement runs once per round, rounds interleaved, so that a slow
spell of a noisy machine falls on both sides of a ratio.
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
from tqdm.auto import tqdm

from benchmarks.common import (
    command_line,
    commands_markdown,
    git_commit,
    machine_info,
    write_results,
)
from densitywatch.api.v1 import densitywatch_pb2 as pb
from densitywatch.client import Client
from densitywatch.density.artifact import ArtifactStore, fingerprint
from densitywatch.service.scorer import traced_log_p
from densitywatch.training.calibrate import calibrate_encoded
from densitywatch.training.fit import Capacity, FitConfig, default_capacities, fit
from densitywatch.training.schema import infer_schema_from_matrix

N_FEATURES = 10
STREAM = "bench"


def make_data(n: int, seed: int) -> np.ndarray:
    """Correlated Gaussian features (a plausible metrics stream)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 3))
    mix = rng.normal(size=(3, N_FEATURES))
    return base @ mix + 0.3 * rng.normal(size=(n, N_FEATURES))


def build_store(root: Path) -> tuple[Any, np.ndarray]:
    """The default capacity grid's choice for 20k training rows (the large band; `fit`
    holds 20% out for validation, so a stream of 25k rows), trained briefly: throughput
    depends on the shape, not the weights."""
    x = make_data(30_000, 0)
    schema = infer_schema_from_matrix(x[:20_000])
    capacity: Capacity = default_capacities(20_000, schema)[-1]
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


def raw_run(model: Any, x: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """The model's forward in this process, one batch after another, for `seconds`: log p
    alone, the computation the server runs for calls that ask for no explanation."""
    xb = torch.from_numpy(np.ascontiguousarray(x[:batch]))
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - start < seconds:
            model(xb)
            n += 1
    elapsed = time.perf_counter() - start
    return {
        "calls_per_s": n / elapsed,
        "points_per_s": n * batch / elapsed,
        "errors": 0,
        "latencies_ms": np.zeros(0),
    }


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
                    ready = grpc.channel_ready_future(ch)
                    try:
                        ready.result(timeout=1)
                    finally:
                        # A pending future keeps polling the channel, and once the channel
                        # is closed its thread dies with "Channel closed!".
                        ready.cancel()
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


def load(call: Callable[[], int], clients: int, seconds: float) -> dict[str, Any]:
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
        "errors": int(sum(errors)),
        "latencies_ms": lat,
    }


def score_call(client: Client, request: pb.ScoreRequest) -> Callable[[], int]:
    def call() -> int:
        return len(client.stub.Score(request, timeout=30).log_prob)

    return call


def stream_run(client: Client, request: pb.ScoreRequest, seconds: float) -> dict[str, Any]:
    """One ScoreStream call, the client sending `request` as fast as the stream takes it."""
    n = messages = errors = 0
    start_t = time.perf_counter()

    def requests():  # type: ignore[no-untyped-def]
        while time.perf_counter() - start_t < seconds:
            yield request

    try:
        for response in client.stub.ScoreStream(requests(), timeout=seconds + 30):
            n += len(response.log_prob)
            messages += 1
    except grpc.RpcError:
        errors += 1
    elapsed = time.perf_counter() - start_t
    return {
        "calls_per_s": messages / elapsed,
        "points_per_s": n / elapsed,
        "errors": errors,
        "latencies_ms": np.zeros(0),
    }


BATCH_CLIENTS = 4  # concurrent callers for the batched figure: a producer pipelines calls
# Per-round ratios on this 2-core machine spread by ±0.08; with 5 rounds, the median of the
# same code moved by ±0.02 between runs. 9 rounds take about 4 minutes.
ROUNDS = 9


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def _pooled(rounds: list[dict[str, Any]], latencies: list[np.ndarray]) -> dict[str, Any]:
    """Medians of per-round throughputs; percentiles over every call of every round."""
    lat = np.concatenate(latencies)
    return {
        "calls_per_s": _median([r["calls_per_s"] for r in rounds]),
        "points_per_s": _median([r["points_per_s"] for r in rounds]),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "errors": int(sum(r["errors"] for r in rounds)),
        "rounds": [r["points_per_s"] for r in rounds],
    }


def run(
    seconds: float, out: Path | None, rounds: int = ROUNDS, command: str | None = None
) -> dict[str, Any]:
    """Every measurement once per round, rounds interleaved, so that a slow spell of the
    machine hits both sides of a ratio; ratios are medians of per-round ratios. `command`,
    the command line of the run, is recorded in the result."""
    commit = git_commit()  # of the code that runs: HEAD may move during the run
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="dw-bench-"))
    artifact, x = build_store(tmp / "store")
    eager = artifact.model.fold()
    model = traced_log_p(eager)  # what the server runs (DENSITYWATCH_TRACE_MODELS default)
    one = pb.ScoreRequest(stream=STREAM, points=pb.Points(numbers=x[0].tolist(), count=1))
    batch = pb.ScoreRequest(
        stream=STREAM, points=pb.Points(numbers=x[:256].ravel().tolist(), count=256)
    )
    procs: list[subprocess.Popen] = []
    per_round: dict[str, list[dict[str, float]]] = {}
    lat: dict[str, list[np.ndarray]] = {}

    def record(key: str, result: dict[str, Any]) -> None:
        lat.setdefault(key, []).append(result.pop("latencies_ms"))
        per_round.setdefault(key, []).append(result)

    try:
        echo_proc, echo_port = echo()
        procs.append(echo_proc)
        on_proc, on_port = serve(tmp / "store", batching=True)
        procs.append(on_proc)
        off_proc, off_port = serve(tmp / "store", batching=False)
        procs.append(off_proc)
        with (
            Client(f"127.0.0.1:{echo_port}") as e,
            Client(f"127.0.0.1:{on_port}") as on,
            Client(f"127.0.0.1:{off_port}") as off,
        ):
            for _ in tqdm(range(rounds), desc="rounds", unit="round"):
                for b in (1, 16, 256):
                    record(f"raw_batch_{b}", raw_run(model, x, b, seconds))
                for b in (1, 256):
                    record(f"raw_eager_batch_{b}", raw_run(eager, x, b, seconds))
                record("served_batch_256_1_client", load(score_call(on, batch), 1, seconds))
                record(
                    f"served_batch_256_{BATCH_CLIENTS}_clients",
                    load(score_call(on, batch), BATCH_CLIENTS, seconds),
                )
                record("served_stream_256", stream_run(on, batch, seconds))
                record("served_single_1_client", load(score_call(on, one), 1, seconds))
                record("echo_single_1_client", load(score_call(e, one), 1, seconds))
                record(
                    "served_single_32_clients_batching_on", load(score_call(on, one), 32, seconds)
                )
                record(
                    "served_single_32_clients_batching_off", load(score_call(off, one), 32, seconds)
                )
                record("echo_single_32_clients", load(score_call(e, one), 32, seconds))
            for proc in procs[1:]:  # the served ones: graceful stop, as in production
                proc.terminate()
                proc.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results: dict[str, Any] = {k: _pooled(v, lat[k]) for k, v in per_round.items()}
    results["raw_points_per_s_batch_8192"] = raw_run(model, x, 8192, seconds)["points_per_s"]
    results["iforest_points_per_s"] = iforest_points_per_s(x, seconds)
    summary = {**summarise(results, per_round), "commit": commit}
    if command is not None:
        summary["command"] = command
    if out is not None:
        write_results("serving", summary, markdown(summary), out)
    return summary


def _ratio(per_round: dict[str, list[dict[str, float]]], num: str, den: str, key: str) -> float:
    """Median over rounds of num/den, each round's pair measured seconds apart."""
    return _median([a[key] / b[key] for a, b in zip(per_round[num], per_round[den], strict=True)])


def summarise(r: dict[str, Any], per_round: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    single_1 = r["served_single_1_client"]
    on, off = r["served_single_32_clients_batching_on"], r["served_single_32_clients_batching_off"]
    errors = sum(v.get("errors", 0) for v in r.values() if isinstance(v, dict))
    pts, calls = "points_per_s", "calls_per_s"
    batched = f"served_batch_256_{BATCH_CLIENTS}_clients"
    return {
        "ratios": {
            "batched_served_over_raw": _ratio(per_round, batched, "raw_batch_256", pts),
            "batched_served_1_client_over_raw": _ratio(
                per_round, "served_batch_256_1_client", "raw_batch_256", pts
            ),
            "stream_served_over_raw": _ratio(per_round, "served_stream_256", "raw_batch_256", pts),
            "single_served_over_echo": _ratio(
                per_round, "served_single_1_client", "echo_single_1_client", calls
            ),
            "single_served_over_echo_32_clients": _ratio(
                per_round, "served_single_32_clients_batching_on", "echo_single_32_clients", calls
            ),
            "dynamic_batching_gain_32_clients": _ratio(
                per_round,
                "served_single_32_clients_batching_on",
                "served_single_32_clients_batching_off",
                calls,
            ),
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
            "batch_256_1_client_p50": r["served_batch_256_1_client"]["p50_ms"],
            "batch_256_1_client_p99": r["served_batch_256_1_client"]["p99_ms"],
            f"batch_256_{BATCH_CLIENTS}_clients_p50": r[batched]["p50_ms"],
            f"batch_256_{BATCH_CLIENTS}_clients_p99": r[batched]["p99_ms"],
        },
        "targets": {
            "batched_served_over_raw": 0.7,
            "single_served_over_echo": 0.6,
            "single_1_client_p99_ms": 5.0,
            "errors": 0,
        },
        "errors": int(errors),
        "protocol": {
            "rounds": len(per_round["raw_batch_256"]),
            "batched_clients": BATCH_CLIENTS,
            "note": "each round measures everything once, in turn; throughputs are medians "
            "over rounds, ratios medians of per-round ratios, percentiles over all calls",
        },
        "details": r,
        "machine": machine_info(),
    }


ROWS = [
    ("raw_batch_1", "raw forward, batch 1"),
    ("raw_batch_16", "raw forward, batch 16"),
    ("raw_batch_256", "raw forward, batch 256"),
    ("raw_eager_batch_1", "raw forward, eager module (not traced), batch 1"),
    ("raw_eager_batch_256", "raw forward, eager module (not traced), batch 256"),
    ("served_batch_256_1_client", "served Score, 256 points/call, 1 client"),
    (
        f"served_batch_256_{BATCH_CLIENTS}_clients",
        f"served Score, 256 points/call, {BATCH_CLIENTS} clients",
    ),
    ("served_stream_256", "served ScoreStream, 256 points/message"),
    ("served_single_1_client", "served Score, 1 point, 1 client"),
    ("echo_single_1_client", "echo, 1 point, 1 client"),
    ("served_single_32_clients_batching_on", "served Score, 1 point, 32 clients, batching on"),
    ("served_single_32_clients_batching_off", "served Score, 1 point, 32 clients, batching off"),
    ("echo_single_32_clients", "echo, 1 point, 32 clients"),
]


def markdown(s: dict[str, Any]) -> str:
    d = s["details"]
    lines = [
        "# Serving benchmark",
        "",
        f"Commit `{s['commit']}`, {s['machine']['cpu']} "
        f"({s['machine'].get('cpus_available')} CPUs available), "
        f"{s['protocol']['rounds']} interleaved rounds: throughputs are medians over rounds, "
        "ratios medians of per-round ratios, latency percentiles over all calls.",
        "",
        "| measurement | points/s | calls/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        v = d[key]
        lines.append(
            f"| {label} | {v['points_per_s']:,.0f} | {v['calls_per_s']:,.0f} "
            f"| {_ms(v['p50_ms'])} | {_ms(v['p99_ms'])} |"
        )
    lines.append(
        f"| IsolationForest.score_samples, 10,000 points/call "
        f"| {d['iforest_points_per_s']:,.0f} | | | |"
    )
    lines.append(f"| raw forward, batch 8192 | {d['raw_points_per_s_batch_8192']:,.0f} | | | |")
    lines += ["", "| ratio | value | target |", "|---|---:|---:|"]
    targets = s["targets"]
    for k, v in s["ratios"].items():
        lines.append(f"| {k} | {v:.2f} | {targets.get(k, '')} |")
    lines.append(f"| single_1_client_p99 (ms) | {s['latency_ms']['single_1_client_p99']:.2f} | 5 |")
    lines.append(f"| errors | {s['errors']} | 0 |")
    if s.get("command"):
        lines += ["", *commands_markdown([s["command"]])]
    return "\n".join(lines) + "\n"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="per measurement and round (default 1)"
    )
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"interleaved rounds (default {ROUNDS})"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")
    summary = run(args.seconds, args.out, args.rounds, command_line("benchmarks.serving", argv))
    print(markdown(summary))


if __name__ == "__main__":
    main()
