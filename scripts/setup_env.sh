#!/usr/bin/env bash
# Create (or reuse) .venv and install densitywatch with torch pinned to the CPU build 2.13.0.
# Installing torch first matters: a bare `torch` requirement would pull GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The +cpu build, from the configured sources (e.g. a local wheel folder), else from PyTorch's
# CPU index; never PyPI's default build, which pulls the CUDA packages.
TORCH="torch==2.13.0+cpu"
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  python -m pip install -q "$TORCH" 2>/dev/null \
    || python -m pip install -q --extra-index-url https://download.pytorch.org/whl/cpu "$TORCH"
fi
python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
