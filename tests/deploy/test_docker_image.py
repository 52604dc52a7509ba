"""Dockerfile (hadolint, structure), its health check script, and the compose file.

Docker cannot run on the development machines: the compose file is checked by parsing.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from densitywatch.service.settings import ServiceSettings
from tests.deploy.deploy_helpers import DOCKER, REPO, require_tool

DOCKERFILE = DOCKER / "Dockerfile"
HEALTHCHECK = DOCKER / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes() -> None:
    proc = hadolint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD densitywatch serve\n")
    proc = hadolint(bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3013" in proc.stdout  # latest tag; unpinned pip


def test_multi_stage_non_root_cpu_torch() -> None:
    steps = instructions()
    stages = [args for kw, args in steps if kw == "FROM"]
    assert len(stages) >= 2
    runtime = max(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    users = [args for kw, args in steps[runtime:] if kw == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    runs = [args for kw, args in steps if kw == "RUN"]
    torch_installs = [run for run in runs if re.search(r"\btorch\b", run)]
    assert torch_installs == [
        "pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    ]
    assert any(kw == "COPY" and "--from=build" in args for kw, args in steps[runtime:])


def test_entrypoint_health_check_and_ports() -> None:
    steps = dict(instructions())
    assert yaml.safe_load(steps["ENTRYPOINT"]) == ["densitywatch"]
    assert yaml.safe_load(steps["CMD"]) == ["serve"]
    assert "healthcheck.py" in steps["HEALTHCHECK"]
    settings = ServiceSettings()
    assert set(steps["EXPOSE"].split()) == {str(settings.grpc_port), str(settings.metrics_port)}


def dockerignore_patterns() -> list[str]:
    lines = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def included(path: str) -> bool:
    """Whether the build context keeps `path` (last matching pattern wins, ! re-includes)."""
    keep = True
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if pattern == "**" or fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            keep = negate
    return keep


def copy_sources() -> Iterator[str]:
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            yield from args.split()[:-1]


def test_copied_sources_exist_in_the_build_context() -> None:
    sources = list(copy_sources())
    assert "pyproject.toml" in sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
        assert included(source), f"COPY {source}: excluded by Dockerfile.dockerignore"
    assert not included(".venv") and not included("tests")


# -- the health check script ---------------------------------------------------------------------
@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def run_healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, timeout=30
    )


def test_healthcheck_reports_serving(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    proc = run_healthcheck("--port", str(port))
    assert proc.returncode == 0, proc.stderr
    assert "SERVING" in proc.stdout


def test_healthcheck_fails_when_not_serving(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    proc = run_healthcheck("--port", str(port))
    assert proc.returncode == 1
    assert "NOT_SERVING" in proc.stderr


def test_healthcheck_fails_without_a_server(
    health_server: tuple[int, health.HealthServicer],
) -> None:
    port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    proc = run_healthcheck("--port", str(port), "--service", "densitywatch.v1.Nope")
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr
    with socket_closed_port() as free:
        proc = run_healthcheck("--port", str(free), "--timeout", "1")
    assert proc.returncode == 1 and "UNAVAILABLE" in proc.stderr


class socket_closed_port:  # noqa: N801 - used as a context manager
    """A loopback port with nothing listening."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])  # bound, not listening: connections refused

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


# -- compose ---------------------------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def bind_mounts(service: dict) -> dict[str, tuple[Path, bool]]:
    """target -> (host path, read-only) for the service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if parts[0].startswith((".", "/")):
            out[parts[1]] = ((DOCKER / parts[0]).resolve(), parts[2:] == ["ro"])
    return out


def test_compose_builds_this_image() -> None:
    service = compose()["services"]["densitywatch"]
    context = (DOCKER / service["build"]["context"]).resolve()
    assert context == REPO
    assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_compose_service_settings_and_ports() -> None:
    service = compose()["services"]["densitywatch"]
    env = service["environment"]
    fields = {f"DENSITYWATCH_{name.upper()}" for name in ServiceSettings.model_fields}
    assert set(env) <= fields, sorted(set(env) - fields)
    settings = ServiceSettings(
        **{k.removeprefix("DENSITYWATCH_").lower(): v for k, v in env.items()}
    )
    published = {p.split(":")[-1] for p in service["ports"]}
    assert published == {str(settings.grpc_port), str(settings.metrics_port)}
    store, read_only = bind_mounts(service)[str(settings.model_store)]
    assert read_only and store == REPO / "store"
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > settings.grace_period_s


def test_compose_prometheus_loads_config_and_rules() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = bind_mounts(prometheus)
    config_path = next(
        a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--config.file=")
    )
    config_file, _ = mounts[config_path]
    assert config_file == REPO / "deploy/prometheus/prometheus.yml"
    config = yaml.safe_load(config_file.read_text())
    for rule_file in config["rule_files"]:  # relative to the config file, inside the container
        target = str(Path(config_path).parent / rule_file)
        assert mounts[target][0] == REPO / "deploy/prometheus" / rule_file
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services
    assert int(port) == int(services[host]["environment"]["DENSITYWATCH_METRICS_PORT"])
    for service in services.values():
        for host_path, _ in bind_mounts(service).values():
            assert host_path.exists() or host_path == REPO / "store", host_path
    assert "9090:9090" in prometheus["ports"] and "3000:3000" in services["grafana"]["ports"]
