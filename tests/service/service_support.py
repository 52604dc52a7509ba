"""Helpers for the service tests: tiny calibrated models in a real artifact store, and a
real in-process server on a free loopback port.

(A uniquely named module rather than conftest.py, so `import` cannot pick up another
directory's conftest.)
"""

from __future__ import annotations

import shutil
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densitywatch.density.artifact import Artifact, ArtifactStore, fingerprint
from densitywatch.density.schema import FeatureKind, FeatureSpec, RawType, Schema
from densitywatch.service.server import DensityWatchServer
from densitywatch.service.settings import ServiceSettings
from densitywatch.training.calibrate import calibrate_encoded
from densitywatch.training.fit import Capacity, FitConfig, fit

torch.set_num_threads(1)

OS_VOCAB = ["linux", "windows", "mac"]
LEVELS = {"warning": 0.05, "critical": 0.01}


def hosts_schema() -> Schema:
    return Schema(
        features=[
            FeatureSpec(name="cpu", mean=0.5, std=0.2),
            FeatureSpec(name="mem", mean=2.0, std=1.0),
            FeatureSpec(name="conns", kind=FeatureKind.INTEGER, mean=10.0, std=3.0),
            FeatureSpec(
                name="os",
                raw_type=RawType.STRING,
                kind=FeatureKind.CATEGORICAL,
                vocabulary=OS_VOCAB,
            ),
        ]
    )


def hosts_data(n: int, seed: int) -> tuple[np.ndarray, list[list[str]]]:
    """cpu ~ N(0.5, 0.1), mem = 4 cpu + noise, conns ~ Poisson(10), os mostly linux."""
    rng = np.random.default_rng(seed)
    cpu = rng.normal(0.5, 0.1, n)
    mem = 4 * cpu + rng.normal(0, 0.1, n)
    conns = rng.poisson(10, n).astype(np.float64)
    os_ = rng.choice(OS_VOCAB, size=n, p=[0.7, 0.2, 0.1])
    return np.stack([cpu, mem, conns], axis=1), [[o] for o in os_]


def pair_schema() -> Schema:
    return Schema(features=[FeatureSpec(name="a"), FeatureSpec(name="b")])


def pair_data(n: int, seed: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(shift, 1.0, n)
    return np.stack([a, a * 0.5 + rng.normal(0, 0.5, n)], axis=1)


def _fit(schema: Schema, x: np.ndarray, seed: int) -> Any:
    config = FitConfig(
        max_steps=200,
        show_progress=False,
        seed=seed,
        capacities=[Capacity(hidden_width=16, n_components=2, n_orderings=2)],
    )
    return fit(schema, x, config)


def write_version(
    store: ArtifactStore,
    stream: str,
    schema: Schema,
    x_fit: np.ndarray,
    x_cal: np.ndarray | None,
    seed: int = 0,
) -> Artifact:
    """Fit, write an uncalibrated version, then (if x_cal) a calibrated child version."""
    result = _fit(schema, x_fit, seed)
    info = result.training_info(fingerprint(x_fit), seed=seed)
    artifact = store.write(result.model, result.manifest(stream, info))
    if x_cal is None:
        return artifact
    return add_calibration(store, artifact, x_cal)


def add_calibration(store: ArtifactStore, artifact: Artifact, x_cal: np.ndarray) -> Artifact:
    return calibrate_encoded(store, artifact, x_cal, LEVELS)


def build_store(root: Path) -> dict[str, Any]:
    """hosts (mixed features; v1 uncalibrated, v2 calibrated), alpha/beta (2 numeric, shifted
    apart, for Classify), raw (uncalibrated only)."""
    store = ArtifactStore(root)
    schema = hosts_schema()
    numbers, strings = hosts_data(1200, seed=1)
    x = schema.encode(numbers, strings)
    hosts = write_version(store, "hosts", schema, x[:800], x[800:], seed=0)
    pair = pair_schema()
    alpha = write_version(store, "alpha", pair, pair_data(600, 2, 0.0), pair_data(400, 3, 0.0))
    beta = write_version(store, "beta", pair, pair_data(600, 4, 8.0), pair_data(400, 5, 8.0))
    write_version(store, "raw", pair, pair_data(300, 6, 0.0), None)
    return {"hosts": hosts, "alpha": alpha, "beta": beta}


def copy_store(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(store: Path, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "model_store": store,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "poll_interval_s": 3600.0,
        "thread_pool_size": 16,
        "grace_period_s": 1.0,
    }
    values.update(overrides)
    return ServiceSettings(**values)


@contextmanager
def running_server(settings: ServiceSettings, load: bool = True) -> Iterator[DensityWatchServer]:
    server = DensityWatchServer(settings)
    server.start()
    try:
        if load:
            server.load()
        yield server
    finally:
        server.stop(0)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse /metrics into {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
