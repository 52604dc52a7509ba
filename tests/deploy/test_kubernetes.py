"""Kubernetes manifests: schema validation, kustomize build, and consistency with the code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from densitywatch.cli import build_parser
from densitywatch.service.settings import ServiceSettings
from tests.deploy.deploy_helpers import KUBERNETES, REPO, load_yaml_docs

K8S_VERSION = "1.32"  # validate against the oldest supported Kubernetes we target
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


def raw_manifests(folder: Path = KUBERNETES) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        docs.extend(load_yaml_docs(folder / resource))
    return docs


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def all_manifests() -> list[dict[str, Any]]:
    return raw_manifests() + raw_manifests(KUBERNETES / "train")


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def settings_from(env: dict[str, str]) -> ServiceSettings:
    """The service's settings for DENSITYWATCH_* variables (validated by the real model)."""
    # Any: the values are the raw strings pydantic parses, as it does when reading the environment.
    fields: dict[str, Any] = {k.removeprefix("DENSITYWATCH_").lower(): v for k, v in env.items()}
    return ServiceSettings(**fields)


def settings_env() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (KUBERNETES / "settings.env").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return {key: value for key, value in pairs}


# -- schemas ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "doc", all_manifests(), ids=lambda d: f"{d['kind']}-{d['metadata']['name']}"
)
def test_manifest_matches_kubernetes_schema(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRD_KINDS:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert isinstance(doc["spec"], dict) and doc["spec"]
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_schema_validation_rejects_a_broken_manifest() -> None:
    deployment = one(raw_manifests(), "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        command = [kubectl, "kustomize", str(folder)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(folder)]
    else:
        pytest.skip("neither kubectl nor kustomize installed (scripts/install_test_tools.sh)")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.parametrize("folder", [KUBERNETES, KUBERNETES / "train"], ids=["base", "train"])
def test_kustomize_build_is_valid(folder: Path) -> None:
    docs = kustomize_build(folder)
    assert docs
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "densitywatch", doc["metadata"]["name"]
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] in {"Deployment", "Job", "CronJob"}:
            images = {c["image"] for c in pod_spec(doc)["containers"]}
            assert images == {"densitywatch:0.1.0"}


def test_kustomize_settings_configmap_reaches_the_deployment() -> None:
    docs = kustomize_build(KUBERNETES)
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    deployment = one(docs, "Deployment")
    (ref,) = [e["configMapRef"]["name"] for e in pod_spec(deployment)["containers"][0]["envFrom"]]
    assert ref.startswith("densitywatch-settings-")  # content hash: edits roll the pods
    assert configmaps[ref]["data"] == settings_env()
    assert "streams.toml" in configmaps["densitywatch-streams"]["data"]


# -- the service --------------------------------------------------------------------------------
def test_settings_are_real_service_settings() -> None:
    env = settings_env()
    fields = {f"DENSITYWATCH_{name.upper()}" for name in ServiceSettings.model_fields}
    assert set(env) <= fields, sorted(set(env) - fields)
    settings = settings_from(env)
    assert (settings.grpc_port, settings.metrics_port) == (50051, 9095)
    assert str(settings.model_store) == "/models"


def test_deployment_probes_resources_and_grace() -> None:
    docs = raw_manifests()
    deployment = one(docs, "Deployment")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    settings = settings_from(settings_env())
    assert parse_cli(container["args"]).command == "serve"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": settings.grpc_port}, probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.grpc_port, "metrics": settings.metrics_port}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert spec["terminationGracePeriodSeconds"] == 30
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + settings.grace_period_s + 5
    assert "replicas" not in deployment["spec"]  # owned by the HPA
    assert spec["securityContext"]["runAsNonRoot"] is True
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_model_store_is_a_shared_volume_mounted_read_only_by_the_service() -> None:
    docs = all_manifests()
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert claims["densitywatch-models"]["spec"]["accessModes"] == ["ReadWriteMany"]
    store = str(settings_from(settings_env()).model_store)
    for doc in docs:
        if doc["kind"] not in {"Deployment", "Job", "CronJob"}:
            continue
        spec = pod_spec(doc)
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [
            m
            for c in spec["containers"]
            for m in c["volumeMounts"]
            if volumes[m["name"]].get("persistentVolumeClaim", {}).get("claimName")
            == "densitywatch-models"
        ]
        assert mount["mountPath"] == store
        read_only = doc["kind"] == "Deployment"  # the jobs write new versions
        assert mount.get("readOnly", False) is read_only, doc["metadata"]["name"]
        assert volumes[mount["name"]]["persistentVolumeClaim"].get("readOnly", False) is read_only


def test_service_is_headless_and_selects_the_pods() -> None:
    docs = raw_manifests()
    service = one(docs, "Service")
    deployment = one(docs, "Deployment")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in pod_spec(deployment)["containers"][0]["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    assert "HTTP/2" in (KUBERNETES / "service.yaml").read_text()  # the why is documented


def test_hpa_scales_the_deployment_on_cpu() -> None:
    docs = raw_manifests()
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    deployment = one(docs, "Deployment")
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


# -- jobs -----------------------------------------------------------------------------------------
def parse_cli(args: list[str]) -> Any:
    """Parse container args with the real `densitywatch` command line."""
    return build_parser().parse_args(args)


def config_mount_holds(doc: dict[str, Any], config_path: str) -> None:
    spec = pod_spec(doc)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    folder, name = config_path.rsplit("/", 1)
    volume = volumes[mounts[folder]["name"]]
    assert volume["configMap"]["name"] == "densitywatch-streams"
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "densitywatch-streams"
    ]
    assert name in generator["files"]


def test_training_job_is_indexed_and_shards_agree() -> None:
    from densitywatch.cli.train import shard_from_env

    job = one(raw_manifests(KUBERNETES / "train"), "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    (container,) = pod_spec(job)["containers"]
    args = parse_cli(container["args"])
    assert args.command == "train" and args.shard_from_env
    assert args.shard_count == job["spec"]["completions"]
    # what pod k of the Indexed Job will train
    for k in range(job["spec"]["completions"]):
        assert shard_from_env(args.shard_count, {"JOB_COMPLETION_INDEX": str(k)}) == (
            k,
            job["spec"]["completions"],
        )
    config_mount_holds(job, str(args.config))
    assert pod_spec(job)["restartPolicy"] == "Never"


def test_recalibration_cronjob_runs_calibrate() -> None:
    cronjob = one(raw_manifests(), "CronJob")
    (container,) = pod_spec(cronjob)["containers"]
    args = parse_cli(container["args"])
    assert args.command == "calibrate" and args.json
    assert str(args.data) == "/data/recent"
    config_mount_holds(cronjob, str(args.config))
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5


def test_streams_config_loads_and_points_at_the_volumes() -> None:
    from densitywatch.training.config import load_config

    config = load_config(KUBERNETES / "streams.toml")
    assert str(config.store) == "/models"
    assert config.streams
    for stream in config.streams.values():
        assert str(stream.source).startswith("/data/")


# -- monitoring -----------------------------------------------------------------------------------
def test_servicemonitor_scrapes_the_metrics_port() -> None:
    docs = raw_manifests()
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert ports[endpoint["port"]] == 9095
    assert endpoint["path"] == "/metrics"


def test_prometheusrule_carries_the_same_rules() -> None:
    rule = one(raw_manifests(), "PrometheusRule")
    rules_file = yaml.safe_load((REPO / "deploy/prometheus/rules.yml").read_text())
    assert rule["spec"] == rules_file
    proc = subprocess.run(
        [sys.executable, str(REPO / "deploy/sync_rules.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
