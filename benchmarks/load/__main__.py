"""Bounded load test: many concurrent clients mixing valid and invalid calls and streams
against a real `densitywatch serve` process on loopback, then a back-pressure phase.

    python -m benchmarks.load [--duration-s 180] [--clients 32] [--out benchmarks/results]

Stops by itself after the duration (plus a ~15 s back-pressure phase). Reports requests,
errors on valid calls (must be 0), latency percentiles overall and per time window, and
the server's resident memory at start and end. Writes load.json and load.md.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from benchmarks.common import (
    command_line,
    commands_markdown,
    git_commit,
    machine_info,
    write_results,
)
from densitywatch.client import Client
from densitywatch.density.artifact import ArtifactStore, fingerprint
from densitywatch.training.calibrate import calibrate_encoded
from densitywatch.training.fit import Capacity, FitConfig, fit
from densitywatch.training.schema import infer_schema_from_matrix

STREAMS = ("cpu", "net")
N_FEATURES = 4
WINDOW_S = 10.0
QUEUE_LIMIT = 20_000
RSS_GROWTH_BOUND_MB = 50.0


def make_data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 2))
    return base @ rng.normal(size=(2, N_FEATURES)) + 0.3 * rng.normal(size=(n, N_FEATURES))


def build_store(root: Path) -> None:
    """Two small calibrated streams (trained briefly: load depends on shape, not weights)."""
    store = ArtifactStore(root)
    for seed, stream in enumerate(STREAMS):
        x = make_data(6000, seed)
        schema = infer_schema_from_matrix(x[:4000])
        config = FitConfig(
            capacities=[Capacity(hidden_width=32, n_components=3, n_orderings=2)],
            max_steps=100,
            show_progress=False,
            seed=seed,
        )
        result = fit(schema, schema.encode(x[:4000]), config)
        info = result.training_info(fingerprint(x), seed=seed)
        artifact = store.write(result.model, result.manifest(stream, info))
        calibrate_encoded(store, artifact, schema.encode(x[4000:]))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(store: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DENSITYWATCH_GRPC_HOST": "127.0.0.1",
        "DENSITYWATCH_METRICS_HOST": "127.0.0.1",
        "DENSITYWATCH_QUEUE_LIMIT": str(QUEUE_LIMIT),
        "DENSITYWATCH_MAX_CONCURRENT_STREAMS": "64",
        "DENSITYWATCH_THREAD_POOL_SIZE": "128",
        "DENSITYWATCH_GRACE_PERIOD_S": "10",
    }
    command = [sys.executable, "-m", "densitywatch", "serve", "--store", str(store)]
    command += ["--port", str(port), "--metrics-port", str(free_port())]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(client: Client, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else b''!r}")
        try:
            client.score(STREAMS[0], make_data(1, 0), timeout=2)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError("server never became ready")


@dataclass
class Call:
    t: float  # seconds since the start
    latency_s: float
    valid: bool
    code: str


def _code(e: BaseException) -> str:
    code = getattr(e, "code", None)
    code = code() if callable(code) else code
    return code.name if isinstance(code, grpc.StatusCode) else type(e).__name__


class Worker:
    """One client thread: 80% valid calls (Score, ScoreStream), 20% invalid ones."""

    def __init__(self, client: Client, seed: int, start: float) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.data = make_data(2000, 100 + seed)
        self.start = start
        self.calls: list[Call] = []
        self.garbage = client._channel.unary_unary(
            "/densitywatch.v1.DensityWatch/Score", lambda b: b, lambda b: b
        )

    def points(self) -> np.ndarray:
        n = self.rng.randint(1, 50)
        i = self.rng.randrange(0, len(self.data) - n)
        return self.data[i : i + n]

    def one(self) -> None:
        r = self.rng.random()
        stream = self.rng.choice(STREAMS)
        valid = r < 0.8
        t0 = time.perf_counter()
        try:
            if r < 0.7:
                x = self.points()
                result = self.client.score(stream, x)
                assert len(result.log_prob) == len(x)
            elif r < 0.8:
                batches = [self.points() for _ in range(5)]
                results = list(self.client.score_stream(stream, batches))
                assert [len(b.log_prob) for b in results] == [len(b) for b in batches]
            elif r < 0.85:
                x = self.points().copy()
                x[0, 0] = float("nan")
                self.client.score(stream, x)
            elif r < 0.9:
                self.client.score(stream, self.points()[:, :3])
            elif r < 0.95:
                self.client.score("no-such-stream", self.points())
            else:
                self.garbage(self.rng.randbytes(self.rng.randint(1, 200)), timeout=30)
            code = "OK"
        except Exception as e:
            code = _code(e)
        now = time.perf_counter()
        self.calls.append(Call(t0 - self.start, now - t0, valid, code))


def run_load(target: str, clients: int, duration_s: float) -> list[Call]:
    start = time.perf_counter()
    end = start + duration_s
    workers: list[Worker] = []
    channels = [Client(target, timeout=30) for _ in range(max(1, clients // 8))]

    def loop(i: int) -> None:
        worker = Worker(channels[i % len(channels)], i, start)
        workers.append(worker)
        while time.perf_counter() < end:
            worker.one()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    for c in channels:
        c.close()
    return [call for w in workers for call in w.calls]


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0}
    ms = np.asarray(latencies) * 1000
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "p999": round(float(np.percentile(ms, 99.9)), 3),
    }


def windows(calls: list[Call], duration_s: float) -> list[dict[str, Any]]:
    out = []
    for k in range(max(1, round(duration_s / WINDOW_S))):  # no trailing sliver
        lo, hi = k * WINDOW_S, (k + 1) * WINDOW_S
        inside = [c for c in calls if lo <= c.t < hi]
        valid = [c.latency_s for c in inside if c.valid]
        out.append(
            {
                "start_s": lo,
                "requests": len(inside),
                "errors_on_valid_calls": sum(c.valid and c.code != "OK" for c in inside),
                "latency_ms": percentiles(valid),
            }
        )
    return out


def back_pressure(target: str) -> dict[str, Any]:
    """Flood with large calls until the queue is full, then check recovery at low load."""
    x = make_data(5000, 7)
    flood: list[Call] = []
    start = time.perf_counter()
    with Client(target, timeout=60) as client:

        def big(_: int) -> None:
            t0 = time.perf_counter()
            try:
                client.score(STREAMS[0], x)
                code = "OK"
            except Exception as e:
                code = _code(e)
            flood.append(Call(t0 - start, time.perf_counter() - t0, True, code))

        with ThreadPoolExecutor(48) as pool:
            list(pool.map(big, range(192)))
        rejected = [c.latency_s for c in flood if c.code == "RESOURCE_EXHAUSTED"]
        time.sleep(1.0)
        after = []
        for _ in range(50):
            t0 = time.perf_counter()
            client.score(STREAMS[0], x[:10])
            after.append(time.perf_counter() - t0)
    return {
        "flood_calls": len(flood),
        "points_per_call": len(x),
        "queue_limit_points": QUEUE_LIMIT,
        "resource_exhausted": len(rejected),
        "other_errors": sum(c.code not in ("OK", "RESOURCE_EXHAUSTED") for c in flood),
        "rejection_latency_ms": percentiles(rejected),
        "recovered_latency_ms": percentiles(after),
    }


def markdown(result: dict[str, Any]) -> str:
    bp = result["back_pressure"]
    lines = [
        "# Load test",
        "",
        f"{result['clients']} clients for {result['duration_s']:.0f} s "
        f"(commit `{result['commit']}`, "
        f"{result['machine']['cpu_count']} CPUs: {result['machine']['cpu']}).",
        "",
        f"- Requests: **{result['requests']}** ({result['valid_requests']} valid, "
        f"{result['invalid_requests']} invalid), {result['throughput_rps']:.0f} calls/s.",
        f"- Errors on valid calls: **{result['errors_on_valid_calls']}**; invalid calls by "
        f"status: {result['invalid_codes']}.",
        f"- Latency of valid calls (ms): p50 {result['latency_ms']['p50']}, "
        f"p99 {result['latency_ms']['p99']}, p99.9 {result['latency_ms']['p999']}.",
        f"- Server RSS: {result['rss_mb']['start']:.1f} MB after warm-up, "
        f"{result['rss_mb']['end']:.1f} MB at the end (bound: +{RSS_GROWTH_BOUND_MB:.0f} MB; "
        f"{'held' if result['rss_within_bound'] else 'EXCEEDED'}).",
        f"- Back-pressure: {bp['flood_calls']} calls of {bp['points_per_call']} points against a "
        f"{bp['queue_limit_points']}-point queue: {bp['resource_exhausted']} "
        f"RESOURCE_EXHAUSTED in p99 {bp['rejection_latency_ms']['p99']} ms, "
        f"{bp['other_errors']} other errors; afterwards p50 "
        f"{bp['recovered_latency_ms']['p50']} ms for 10-point calls.",
        "",
        "| window start (s) | requests | errors (valid) | p50 ms | p99 ms | p99.9 ms | RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in result["windows"]:
        ms = w["latency_ms"]
        lines.append(
            f"| {w['start_s']:.0f} | {w['requests']} | {w['errors_on_valid_calls']} | "
            f"{ms['p50']} | {ms['p99']} | {ms['p999']} | {w.get('rss_mb', '')} |"
        )
    if result.get("command"):
        lines += ["", *commands_markdown([result["command"]])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    commit = git_commit()  # of the code that runs: HEAD may move during the run
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        print("training two small streams ...", flush=True)
        build_store(store)
        port = free_port()
        proc = start_server(store, port)
        try:
            with Client(f"127.0.0.1:{port}") as probe:
                wait_ready(probe, proc)
            target = f"127.0.0.1:{port}"
            run_load(target, args.clients, min(5.0, args.duration_s))  # warm-up
            rss_start = rss_mb(proc.pid)
            rss_samples: list[float] = []
            stop = threading.Event()

            def sample_rss() -> None:
                while not stop.wait(WINDOW_S):
                    rss_samples.append(round(rss_mb(proc.pid), 1))

            sampler = threading.Thread(target=sample_rss, daemon=True)
            sampler.start()
            print(f"{args.clients} clients for {args.duration_s:.0f} s ...", flush=True)
            t0 = time.perf_counter()
            calls = run_load(target, args.clients, args.duration_s)
            elapsed = time.perf_counter() - t0
            stop.set()
            rss_end = rss_mb(proc.pid)
            print("back-pressure phase ...", flush=True)
            bp = back_pressure(target)
        finally:
            proc.terminate()
            exit_code = proc.wait(timeout=30)
    valid = [c for c in calls if c.valid]
    invalid = [c for c in calls if not c.valid]
    codes: dict[str, int] = {}
    for c in invalid:
        codes[c.code] = codes.get(c.code, 0) + 1
    win = windows(calls, elapsed)
    for w, rss in zip(win, rss_samples, strict=False):
        w["rss_mb"] = rss
    result: dict[str, Any] = {
        "requests": len(calls),
        "valid_requests": len(valid),
        "invalid_requests": len(invalid),
        "errors_on_valid_calls": sum(c.code != "OK" for c in valid),
        "invalid_codes": dict(sorted(codes.items())),
        "latency_ms": percentiles([c.latency_s for c in valid]),
        "throughput_rps": round(len(calls) / elapsed, 1),
        "rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1)},
        "rss_growth_bound_mb": RSS_GROWTH_BOUND_MB,
        "rss_within_bound": rss_end - rss_start <= RSS_GROWTH_BOUND_MB,
        "duration_s": round(elapsed, 1),
        "clients": args.clients,
        "window_s": WINDOW_S,
        "windows": win,
        "back_pressure": bp,
        "server_exit_code": exit_code,
        "commit": commit,
        "machine": machine_info(),
        "command": command_line("benchmarks.load", argv),
    }
    json_path, md_path = write_results("load", result, markdown(result), args.out)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    ok = result["errors_on_valid_calls"] == 0 and result["rss_within_bound"] and exit_code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
