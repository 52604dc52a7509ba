"""Benchmarks live in the top-level `benchmarks/` folder, which is not an installed package."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
