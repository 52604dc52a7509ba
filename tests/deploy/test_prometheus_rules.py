"""Prometheus config and alert rules: promtool checks, promtool unit tests, metric names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.deploy_helpers import (
    PROMETHEUS,
    REPO,
    exported_metric_names,
    load_yaml_docs,
    metric_names,
    require_tool,
)

RULES = PROMETHEUS / "rules.yml"
RULES_TESTS = sorted(Path(__file__).parent.glob("rules_test*.yml"))
# Series Prometheus itself writes for every target.
SCRAPE_SERIES = {"up"}


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_promtool_check_config() -> None:
    proc = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 rule files found" in proc.stdout  # rules.yml resolved and loaded


def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert len(RULES_TESTS) == 2
    proc = promtool("test", "rules", *map(str, RULES_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULES_TESTS)


@pytest.mark.parametrize(
    ("original", "mutant"),
    [
        ("(3 * max by (stream, level)", "(10 * max by (stream, level)"),  # multiple
        ("increase10m >= 5)", "increase10m >= 0)"),  # volume guard
        ("> 3 * 86400", "> 4 * 86400"),  # calibration age
        ("min by (stream) (densitywatch_calibration", "max by (stream) (densitywatch_calibration"),
        (
            "unless densitywatch_model_load_failures_total offset 15m",
            "unless densitywatch_model_load_failures_total",
        ),
        ('{method!="ScoreStream"}', ""),
        ('{code!="OK"}', ""),
    ],
)
def test_rule_unit_tests_catch_a_broken_rule(tmp_path: Path, original: str, mutant: str) -> None:
    """The promtool tests fail when a rule's essential part changes."""
    text = RULES.read_text()
    assert original in text
    (tmp_path / "deploy" / "prometheus").mkdir(parents=True)
    (tmp_path / "deploy" / "prometheus" / "rules.yml").write_text(text.replace(original, mutant))
    tests = tmp_path / "tests" / "deploy"
    tests.mkdir(parents=True)
    for test in RULES_TESTS:
        shutil.copy(test, tests / test.name)
    proc = promtool("test", "rules", *(str(tests / test.name) for test in RULES_TESTS))
    assert proc.returncode != 0, f"mutant {mutant!r} passed the rule tests"


def test_rules_use_only_exported_metrics() -> None:
    groups = load_yaml_docs(RULES)[0]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    allowed = exported_metric_names() | recorded | SCRAPE_SERIES
    for rule in rules:
        unknown = metric_names(rule["expr"]) - allowed
        assert not unknown, f"{rule.get('alert') or rule['record']}: unknown metrics {unknown}"


def test_alerts_cover_the_operations_issue() -> None:
    groups = load_yaml_docs(RULES)[0]["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    used = {name: metric_names(rule["expr"]) for name, rule in alerts.items()}
    recorded = {
        r["record"]: metric_names(r["expr"]) for g in groups for r in g["rules"] if "record" in r
    }
    for name, names in used.items():  # see through recording rules
        used[name] = names | set().union(*(recorded.get(n, set()) for n in names))
    wanted = {
        "DensityWatchOutlierRateHigh": {
            "densitywatch_outliers_total",
            "densitywatch_points_scored_total",
            "densitywatch_expected_outlier_rate",
        },
        "DensityWatchCalibrationStale": {"densitywatch_calibration_timestamp_seconds"},
        "DensityWatchModelLoadFailures": {"densitywatch_model_load_failures_total"},
        "DensityWatchHighErrorRate": {"densitywatch_request_duration_seconds_count"},
        "DensityWatchHighLatencyP99": {"densitywatch_request_duration_seconds_bucket"},
    }
    for alert, names in wanted.items():
        assert alert in alerts
        assert names <= used[alert], f"{alert} uses {used[alert]}"
        assert alerts[alert]["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(alerts[alert]["annotations"])


def test_scrape_config_targets_metrics_port() -> None:
    from densitywatch.service.settings import ServiceSettings

    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "densitywatch"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"densitywatch:{ServiceSettings().metrics_port}"]
    assert ServiceSettings().metrics_port == 9095
    assert config["rule_files"] == ["rules.yml"]
