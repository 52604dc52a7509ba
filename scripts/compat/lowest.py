"""Print pip constraints pinning packages to the lowest versions pyproject.toml declares.

    python3 scripts/compat/lowest.py protobuf grpcio ... > constraints.txt

Each named package must be in [project] dependencies with a `>=` bound; that bound becomes
`name==bound`. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")
LOWER = re.compile(r">=\s*([^,;\s]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds(dependencies: list[str]) -> dict[str, str]:
    """Canonical package name -> its `>=` version, for the requirements that have one."""
    out = {}
    for requirement in dependencies:
        match = REQUIREMENT.match(requirement)
        bound = LOWER.search(match.group(2)) if match else None
        if match and bound:
            out[canonical(match.group(1))] = bound.group(1)
    return out


def main(names: list[str]) -> int:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    bounds = lower_bounds(dependencies)
    missing = [n for n in names if canonical(n) not in bounds]
    if missing:
        print(f"no '>=' bound in pyproject.toml dependencies for: {missing}", file=sys.stderr)
        return 2
    for name in names:
        print(f"{canonical(name)}=={bounds[canonical(name)]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
