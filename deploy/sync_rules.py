"""Write deploy/kubernetes/prometheusrule.yaml from deploy/prometheus/rules.yml.

The compose stack's Prometheus loads rules.yml; the Prometheus Operator loads the
PrometheusRule. Both must carry the same groups, so the PrometheusRule is generated (its
`spec` is the rules file, indented), never edited by hand. `--check` exits 1 when stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
RULES = DEPLOY / "prometheus" / "rules.yml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by `python deploy/sync_rules.py`; do not edit.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: densitywatch
  labels:
    app.kubernetes.io/name: densitywatch
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule manifest for a rules file (leading comment lines dropped)."""
    lines = rules_text.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")):
        lines.pop(0)
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    expected = render(RULES.read_text())
    if args.check:
        if PROMETHEUS_RULE.read_text() != expected:
            print(f"{PROMETHEUS_RULE} is stale: run python deploy/sync_rules.py", file=sys.stderr)
            return 1
        return 0
    PROMETHEUS_RULE.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
