"""The demo (`python -m densitywatch.demo`, run by scripts/demo.sh) end to end, as a user runs
it: real data, the real train/calibrate/serve commands, the Python client, the metrics."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    workdir = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, "-m", "densitywatch.demo", "--quick", "--workdir", str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    return proc, workdir


def test_demo_succeeds_and_prints_where_the_metrics_are(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, workdir = demo
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    url = re.search(r"Prometheus metrics: (http://127\.0\.0\.1:(\d+)/metrics)", proc.stdout)
    assert url, proc.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["metrics_url"] == url.group(1)
    # The scraped counters are printed and agree with what the demo scored.
    for name, s in summary["streams"].items():
        n = sum(g["n"] for g in s["groups"].values())
        assert f'densitywatch_points_scored_total{{stream="{name}"}} {float(n)}' in proc.stdout
    assert "server stopped (SIGTERM, drained; exit status 0)" in proc.stdout
    assert (workdir / "densitywatch.toml").is_file()


def test_demo_flags_anomalies_far_more_often_than_normal_points(
    demo: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, workdir = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert set(summary["streams"]) == {"cells", "wine"}
    for name, s in summary["streams"].items():
        assert s["model_version"] == "000002", name  # trained 000001, calibrated 000002
        assert set(s["levels"]) == {"warning", "critical"}
        groups = s["groups"]
        normal = groups["normal"]["flagged"]["warning"] / groups["normal"]["n"]
        anomalous = groups["anomalous"]["flagged"]["warning"] / groups["anomalous"]["n"]
        assert anomalous >= 0.6, (name, anomalous)
        assert anomalous >= normal + 0.5, (name, normal, anomalous)
        # Explanations name real features of the stream, most negative term first.
        example = s["example"]
        assert example["top_features"] and example["top_terms"] == sorted(example["top_terms"])
        assert f"stream {name}:" in proc.stdout
        assert f"explained by (log p(x_i | x_<i)): {example['top_features'][0]}" in proc.stdout
