"""The densitywatch demo: train, calibrate, serve and score real data, end to end.

    python -m densitywatch.demo [--workdir demo] [--quick] [--keep-serving]

Two streams are built from datasets that ship inside scikit-learn (no download):

- `cells`: 30 measurements of breast-cancer cell nuclei. Normal = benign tumours; the
  anomalies scored at the end are malignant ones, which the model never sees.
- `wine`: 13 chemical measurements of wines. Normal = cultivars 0 and 1; the anomalies are
  wines of cultivar 2.

The normal records are split into training, a clean calibration hold-out and a test split,
written as CSV under the work folder with a streams config. The real commands then run
(`densitywatch train`, `densitywatch calibrate`, `densitywatch serve` as a subprocess), and
the Python client scores held-out normal points, real anomalies and synthetic corrupted points
(one feature in the wrong unit). The summary shows false-alarm and detection rates per level,
an explanation, the model versions and the Prometheus metrics endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from densitywatch.client import Client, ScoreResult
from densitywatch.density.calibration import min_scores_for
from densitywatch.errors import DensityWatchError

# Levels for every demo stream: the calibration hold-outs (100 and 50 records) support them.
LEVELS = {"warning": 0.05, "critical": 0.02}
QUICK_MAX_STEPS = 150
SERVE_START_TIMEOUT_S = 120.0
SERVE_STOP_TIMEOUT_S = 30.0
N_CORRUPTED = 10
CORRUPTION_FACTOR = 10.0
GROUPS = ("normal", "anomalous", "corrupted")
METRIC_PREFIXES = ("densitywatch_points_scored_total", "densitywatch_outliers_total")


class DemoError(DensityWatchError):
    """A demo step failed; the message says which and why."""


@dataclass
class DemoStream:
    """One demo stream: its records split for training, calibration and testing."""

    name: str
    description: str
    anomaly_description: str
    columns: list[str]
    train: np.ndarray
    calibration: np.ndarray
    normal: np.ndarray  # held-out clean test records
    anomalous: np.ndarray  # real anomalies, never seen in training or calibration
    corrupted: np.ndarray  # held-out normal records with one feature scaled by 10
    corrupted_feature: list[str] = field(default_factory=list)

    def groups(self) -> dict[str, np.ndarray]:
        return {"normal": self.normal, "anomalous": self.anomalous, "corrupted": self.corrupted}


# -- data -------------------------------------------------------------------------------------
def snake(name: str) -> str:
    """'mean radius' -> 'mean_radius', 'od280/od315_of_diluted_wines' -> 'od280_od315_...'."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def split_normal(
    x: np.ndarray, n_calibration: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, calibration, test) from a random permutation of the normal records."""
    order = rng.permutation(len(x))
    cal = order[:n_calibration]
    test = order[n_calibration : n_calibration + n_test]
    train = order[n_calibration + n_test :]
    return x[train], x[cal], x[test]


def corrupt(
    normal: np.ndarray, columns: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """Copies of normal records, each with one random feature multiplied by
    CORRUPTION_FACTOR (a value logged in the wrong unit)."""
    rows = rng.choice(len(normal), size=min(N_CORRUPTED, len(normal)), replace=False)
    out = normal[rows].copy()
    features = rng.choice(len(columns), size=len(out))
    out[np.arange(len(out)), features] *= CORRUPTION_FACTOR
    return out, [columns[j] for j in features]


def build_stream(
    name: str,
    description: str,
    anomaly_description: str,
    columns: list[str],
    normal: np.ndarray,
    anomalies: np.ndarray,
    sizes: tuple[int, int],
    rng: np.random.Generator,
) -> DemoStream:
    n_calibration, n_test = sizes
    train, calibration, test = split_normal(normal, n_calibration, n_test, rng)
    anomalous = anomalies[rng.permutation(len(anomalies))[:n_test]]
    corrupted, features = corrupt(test, columns, rng)
    return DemoStream(
        name,
        description,
        anomaly_description,
        columns,
        train,
        calibration,
        test,
        anomalous,
        corrupted,
        features,
    )


def demo_streams(seed: int = 0) -> list[DemoStream]:
    """The demo streams, from datasets bundled with scikit-learn."""
    from sklearn.datasets import load_breast_cancer, load_wine

    rng = np.random.default_rng(seed)
    cancer = load_breast_cancer()
    benign = list(cancer.target_names).index("benign")
    cells = build_stream(
        "cells",
        "breast-cancer cell nuclei, 30 measurements; normal = benign tumours",
        "malignant tumours",
        [snake(n) for n in cancer.feature_names],
        cancer.data[cancer.target == benign],
        cancer.data[cancer.target != benign],
        sizes=(100, 57),
        rng=rng,
    )
    wine = load_wine()
    wines = build_stream(
        "wine",
        "wines, 13 chemical measurements; normal = cultivars 0 and 1",
        "wines of cultivar 2",
        [snake(n) for n in wine.feature_names],
        wine.data[wine.target <= 1],
        wine.data[wine.target == 2],
        sizes=(50, 20),
        rng=rng,
    )
    return [cells, wines]


def write_csv(
    path: Path, columns: Sequence[str], rows: np.ndarray, kinds: Sequence[str] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "kind"] if kinds is not None else columns)
        for i, row in enumerate(rows.tolist()):
            values = [repr(float(v)) for v in row]
            writer.writerow([*values, kinds[i]] if kinds is not None else values)


def write_data(workdir: Path, streams: list[DemoStream]) -> Path:
    """CSV splits under workdir/data and the streams config; returns the config path."""
    data = workdir / "data"
    lines = [
        "# Streams of the densitywatch demo (written by `python -m densitywatch.demo`).",
        'store = "store"',
    ]
    for s in streams:
        write_csv(data / "train" / f"{s.name}.csv", s.columns, s.train)
        write_csv(data / "calibration" / f"{s.name}.csv", s.columns, s.calibration)
        groups = s.groups()
        test = np.concatenate(list(groups.values()))
        kinds = [g for g, x in groups.items() for _ in range(len(x))]
        write_csv(data / "test" / f"{s.name}.csv", s.columns, test, kinds)
        lines += ["", f"[streams.{s.name}]", f'source = "data/train/{s.name}.csv"']
    config = workdir / "densitywatch.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


# -- commands ---------------------------------------------------------------------------------
def run_cli(args: Sequence[str], cwd: Path) -> None:
    """Run a `densitywatch` command in a subprocess; raise DemoError when it fails."""
    command = [sys.executable, "-m", "densitywatch", *args]
    print(f"$ densitywatch {' '.join(args)}", flush=True)
    rc = subprocess.run(command, cwd=cwd, check=False).returncode
    if rc != 0:
        raise DemoError(f"`densitywatch {' '.join(args)}` exited with status {rc}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `densitywatch serve` subprocess on loopback ports."""

    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM (the service drains), then wait; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=SERVE_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(store: Path, workdir: Path) -> Server:
    """Start `densitywatch serve` (its own session, so Ctrl-C reaches only the demo)."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DENSITYWATCH_MODEL_STORE": str(store),
        "DENSITYWATCH_GRPC_HOST": "127.0.0.1",
        "DENSITYWATCH_GRPC_PORT": str(port),
        "DENSITYWATCH_METRICS_HOST": "127.0.0.1",
        "DENSITYWATCH_METRICS_PORT": str(metrics_port),
        "DENSITYWATCH_GRACE_PERIOD_S": "5",
    }
    log_path = workdir / "serve.log"
    print(
        f"$ DENSITYWATCH_MODEL_STORE={store} densitywatch serve "
        f"--host 127.0.0.1 --port {port} --metrics-port {metrics_port}  (log: {log_path})",
        flush=True,
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "densitywatch", "serve"],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, port, metrics_port, log_path)


def wait_serving(server: Server, timeout_s: float = SERVE_START_TIMEOUT_S) -> None:
    """Poll grpc.health.v1 until SERVING; raise DemoError if the server dies or times out."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise DemoError(
                    f"densitywatch serve exited with status {server.process.returncode}:\n"
                    f"{server.log_tail()}"
                )
            with contextlib.suppress(grpc.RpcError):
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.2)
    raise DemoError(f"densitywatch serve not SERVING after {timeout_s:.0f} s:\n{server.log_tail()}")


# -- scoring and summary ----------------------------------------------------------------------
@dataclass
class GroupResult:
    """Scores of one group of points (normal, anomalous or corrupted) of a stream."""

    n: int
    flagged: dict[str, int]  # level -> points below its threshold
    result: ScoreResult


def score_stream(
    client: Client, stream: DemoStream, thresholds: dict[str, float]
) -> dict[str, GroupResult]:
    out = {}
    for group, x in stream.groups().items():
        records = [dict(zip(stream.columns, row, strict=True)) for row in x.tolist()]
        result = client.score(stream.name, records, explain=True)
        flagged = {lv: int((result.log_prob < t).sum()) for lv, t in thresholds.items()}
        out[group] = GroupResult(len(x), flagged, result)
    return out


def rate(count: int, n: int) -> str:
    return f"{count:3d}/{n:<3d} ({100.0 * count / n if n else 0.0:5.1f}%)"


def most_improbable(groups: dict[str, GroupResult]) -> dict[str, Any]:
    """The point with the lowest log p among the real anomalies, with its explanation."""
    g = groups["anomalous"]
    i = int(np.argmin(g.result.log_prob))
    tops = g.result.top_features[i] if g.result.top_features else []
    terms = g.result.top_terms[i] if g.result.top_terms else []
    return {
        "group": "anomalous",
        "index": i,
        "log_prob": float(g.result.log_prob[i]),
        "p_value": float(g.result.p_value[i]),
        "level": g.result.level[i],
        "top_features": list(tops),
        "top_terms": [float(t) for t in terms],
    }


def corrupted_named(stream: DemoStream, groups: dict[str, GroupResult]) -> int:
    """How many corrupted points name their corrupted feature first in the explanation."""
    tops = groups["corrupted"].result.top_features or []
    return sum(1 for t, f in zip(tops, stream.corrupted_feature, strict=True) if t and t[0] == f)


def stream_summary(
    stream: DemoStream, levels: dict[str, tuple[float, float]], groups: dict[str, GroupResult]
) -> dict[str, Any]:
    return {
        "description": stream.description,
        "anomalies": stream.anomaly_description,
        "model_version": groups["normal"].result.model_version,
        "n_train": len(stream.train),
        "n_calibration": len(stream.calibration),
        "levels": {lv: {"target_fpr": f, "threshold": t} for lv, (f, t) in levels.items()},
        "groups": {g: {"n": r.n, "flagged": r.flagged} for g, r in groups.items()},
        "example": most_improbable(groups),
        "corrupted_feature_named_first": corrupted_named(stream, groups),
    }


def print_stream(name: str, s: dict[str, Any]) -> None:
    print(f"\nstream {name}: {s['description']}")
    print(
        f"  model version {s['model_version']}; trained on {s['n_train']} records, "
        f"calibrated on {s['n_calibration']} clean held-out records"
    )
    level_names = list(s["levels"])
    header = "".join(
        f"  {lv} (fpr {s['levels'][lv]['target_fpr']:g}, log p < "
        f"{s['levels'][lv]['threshold']:.1f})".ljust(34)
        for lv in level_names
    )
    print(f"  {'flagged':<34}{header}")
    labels = {
        "normal": "normal (held out): false alarms",
        "anomalous": f"{s['anomalies']}: detected",
        "corrupted": f"corrupted (1 feature x{CORRUPTION_FACTOR:g})",
    }
    for group in GROUPS:
        g = s["groups"][group]
        cells = "".join(f"  {rate(g['flagged'][lv], g['n'])}".ljust(34) for lv in level_names)
        print(f"  {labels[group]:<34}{cells}")
    ex = s["example"]
    tops = ", ".join(
        f"{f} ({t:.1f})" for f, t in zip(ex["top_features"], ex["top_terms"], strict=True)
    )
    print(
        f"  most improbable anomaly: log p = {ex['log_prob']:.1f}, level {ex['level']}, "
        f"p-value {ex['p_value']:.3g} (the floor 1/(n+1) for n = {s['n_calibration']})"
    )
    print(f"    explained by (log p(x_i | x_<i)): {tops}")
    n_corrupted = s["groups"]["corrupted"]["n"]
    print(
        f"  corrupted points whose explanation names the corrupted feature first: "
        f"{s['corrupted_feature_named_first']}/{n_corrupted}"
    )


def scrape_lines(url: str, prefixes: Sequence[str] = METRIC_PREFIXES) -> list[str]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return [line for line in text.splitlines() if line.startswith(tuple(prefixes))]


# -- the demo ---------------------------------------------------------------------------------
class Steps:
    """Numbered progress lines with elapsed time."""

    def __init__(self, total: int) -> None:
        self.total, self.n, self.start = total, 0, time.monotonic()

    def __call__(self, text: str) -> None:
        self.n += 1
        elapsed = time.monotonic() - self.start
        print(f"\n[{self.n}/{self.total}] {text}  ({elapsed:.0f} s)", flush=True)


def check_levels(streams: list[DemoStream]) -> None:
    """Explain why the demo's levels fit its calibration sets (and refuse if they do not)."""
    rarest = min(LEVELS.values())
    need = min_scores_for(rarest)
    sizes = ", ".join(f"{s.name} {len(s.calibration)}" for s in streams)
    print(
        f"Levels {', '.join(f'{k}={v:g}' for k, v in LEVELS.items())}: split-conformal "
        f"thresholds at fpr {rarest:g} need >= {need} clean calibration records "
        f"(min_scores_for); the hold-outs have {sizes}. The default levels (0.01, 0.001) "
        f"would need 99 and 999."
    )
    small = [s.name for s in streams if len(s.calibration) < need]
    if small:
        raise DemoError(f"calibration sets too small for fpr {rarest:g}: {small}")


def train_and_calibrate(
    workdir: Path, config: Path, quick: bool, max_steps: int | None, step: Callable[[str], None]
) -> None:
    step("Training one density model per stream (densitywatch train)")
    # One torch thread: these models are small, and on a busy 2-core machine more threads
    # oversubscribe the cores (measured: 25x slower).
    train_args = ["train", "--config", str(config), "--threads", "1"]
    steps = max_steps or (QUICK_MAX_STEPS if quick else None)
    if steps is not None:
        train_args += ["--max-steps", str(steps)]
    run_cli(train_args, workdir)
    step("Calibrating thresholds on the clean hold-outs (densitywatch calibrate)")
    fprs = [arg for fpr in LEVELS.values() for arg in ("--fpr", str(fpr))]
    calibrate_args = [
        "calibrate",
        "--config",
        str(config),
        "--data",
        str(workdir / "data" / "calibration"),
        *fprs,
    ]
    if quick:
        calibrate_args.append("--no-report")
    run_cli(calibrate_args, workdir)


def serve_and_score(
    workdir: Path, streams: list[DemoStream], step: Callable[[str], None], keep_serving: bool
) -> dict[str, Any]:
    step("Starting the scoring service (densitywatch serve)")
    server = start_server((workdir / "store").resolve(), workdir)
    try:
        wait_serving(server)
        print(f"health: SERVING; gRPC on {server.target}, metrics on {server.metrics_url}")
        step("Scoring held-out normal points, real anomalies and corrupted points")
        summary = score_all(server, streams)
        summary["metrics_lines"] = scrape_lines(server.metrics_url)
        print_summary(summary, server)
        if keep_serving:
            wait_for_interrupt(server)
    finally:
        rc = server.stop()
        print(f"\nserver stopped (SIGTERM, drained; exit status {rc})")
        if rc != 0:
            print(server.log_tail(), file=sys.stderr)
    summary["server_exit_status"] = rc
    return summary


def score_all(server: Server, streams: list[DemoStream]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "grpc_target": server.target,
        "metrics_url": server.metrics_url,
        "streams": {},
    }
    with Client(server.target, timeout=60) as client:
        for stream in streams:
            info = client.get_stream(stream.name)
            levels = {lv.name: (lv.target_fpr, lv.threshold) for lv in info.levels}
            thresholds = {name: t for name, (_, t) in levels.items()}
            groups = score_stream(client, stream, thresholds)
            summary["streams"][stream.name] = stream_summary(stream, levels, groups)
    return summary


def print_summary(summary: dict[str, Any], server: Server) -> None:
    print("\n================ densitywatch demo: results ================")
    print(
        "A point is flagged at a level when its log p(x) is below the level's threshold "
        "(counted at every level it crosses, like the metrics)."
    )
    for name, s in summary["streams"].items():
        print_stream(name, s)
    print(f"\nPrometheus metrics: {summary['metrics_url']}")
    for line in summary["metrics_lines"]:
        print(f"  {line}")
    print(
        f"gRPC: {server.target} (health, reflection: e.g. "
        f"`grpcurl -plaintext {server.target} list`)"
    )


def wait_for_interrupt(server: Server) -> None:
    print(
        f"\nServing until Ctrl-C. Try:\n"
        f"  grpcurl -plaintext {server.target} densitywatch.v1.DensityWatch/ListStreams\n"
        f'  grpcurl -plaintext -d \'{{"stream": "wine"}}\' {server.target} '
        f"densitywatch.v1.DensityWatch/GetStream\n"
        f"  densitywatch score --target {server.target} --stream cells "
        f"--data {server.log_path.parent / 'data' / 'test' / 'cells.csv'} --explain\n"
        f"  curl -s {server.metrics_url} | grep ^densitywatch_",
        flush=True,
    )
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
        print("the server exited", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nCtrl-C: stopping")


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    step = Steps(total=5)
    step(f"Writing the demo data and streams config to {workdir}")
    streams = demo_streams(args.seed)
    config = write_data(workdir, streams)
    for s in streams:
        print(
            f"  {s.name}: {s.description}; {len(s.train)} train, {len(s.calibration)} "
            f"calibration, test: {len(s.normal)} normal + {len(s.anomalous)} "
            f"{s.anomaly_description} + {len(s.corrupted)} corrupted"
        )
    print(f"  config: {config}")
    check_levels(streams)
    train_and_calibrate(workdir, config, args.quick, args.max_steps, step)
    summary = serve_and_score(workdir, streams, step, args.keep_serving)
    summary_path = workdir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2))
    print(f"summary: {summary_path}; total {time.monotonic() - step.start:.0f} s")
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m densitywatch.demo",
        description="Train, calibrate, serve and score two demo streams built from datasets "
        "bundled with scikit-learn; prints detection and false-alarm rates per level.",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo"),
        help="folder for data, config, model store and logs (default: demo)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"fewer training steps ({QUICK_MAX_STEPS}) and no calibration plots",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="cap on gradient steps per capacity candidate (overrides --quick)",
    )
    p.add_argument(
        "--keep-serving",
        action="store_true",
        help="keep the service up after the summary until Ctrl-C",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the data splits (default: 0)")
    args = p.parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        p.error("--max-steps must be at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM, and SIGINT even where the shell started us ignoring it (a background job),
    # unwind like Ctrl-C so that the server subprocess is always stopped.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = run_demo(args)
    except DensityWatchError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
    return 0 if summary["server_exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
