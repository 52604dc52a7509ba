#!/usr/bin/env bash
# Is densitywatch co-installable with the ecosystem, and does it run on the ends of its
# declared ranges? Each part builds a throwaway venv (torch CPU first, as scripts/setup_env.sh
# installs it), installs densitywatch, runs `pip check` and scripts/compat/smoke.py (train,
# calibrate, serve; health, reflection and scoring through densitywatch.client):
#   lowest  the lowest declared protobuf, grpcio, grpcio-health-checking, grpcio-reflection,
#           numpy, pydantic and pydantic-settings (constraints from pyproject.toml)
#   triton  tritonclient[grpc], newest, resolved together with densitywatch (protobuf < 7)
#   latest  every dependency at its newest (protobuf 7.x)
# Needs the package registry, so it is not part of the test suite.
# Usage: scripts/check_compat.sh [PART...]   (default: all parts). Exit 1 if any part fails.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0+cpu"
LOWEST=(protobuf grpcio grpcio-health-checking grpcio-reflection numpy pydantic pydantic-settings)
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(lowest triton latest)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$ROOT"

# pip, quietly, into the part's log; the log's tail when it fails.
pip_in() {
  local venv="$1"
  shift
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >>"$venv.log" 2>&1; then
    tail -n 30 "$venv.log" | sed 's/^/    /'
    return 1
  fi
}

# A venv holding the CPU build of torch, from the configured sources else PyTorch's CPU index
# (never PyPI's default build, which pulls the CUDA packages): the same steps as setup_env.sh.
torch_venv() {
  local venv="$1"
  "$PYTHON" -m venv "$venv" || return 1
  pip_in "$venv" -q --upgrade pip || return 1
  pip_in "$venv" -q "$TORCH" 2>/dev/null \
    || pip_in "$venv" -q --extra-index-url https://download.pytorch.org/whl/cpu "$TORCH"
}

install_lowest() {
  python3 scripts/compat/lowest.py "${LOWEST[@]}" >"$1.constraints" || return 1
  echo "  constraints: $(tr '\n' ' ' <"$1.constraints")"
  pip_in "$1" -q -c "$1.constraints" -e .
}

install_triton() {
  pip_in "$1" -q "tritonclient[grpc]" -e .
}

install_latest() {
  pip_in "$1" -q -e .
}

part() {
  local name="$1" venv="$WORK/$1"
  echo "== $name"
  torch_venv "$venv" || { echo "  FAIL torch CPU install"; return 1; }
  "install_$name" "$venv" || { echo "  FAIL install"; return 1; }
  if ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')"; then
    echo "  FAIL torch is not $TORCH: $("$venv/bin/python" -m pip show torch | grep ^Version)"
    return 1
  fi
  if ! "$venv/bin/python" -m pip check >"$venv.check" 2>&1; then
    echo "  FAIL pip check:" && sed 's/^/    /' "$venv.check"
    return 1
  fi
  echo "  PASS pip check: $(cat "$venv.check")"
  "$venv/bin/python" scripts/compat/smoke.py --workdir "$WORK/$name-smoke"
}

declare -A RESULT
failed=0
for name in "${PARTS[@]}"; do
  case "$name" in
    lowest | triton | latest) ;;
    *) echo "unknown part: $name (lowest, triton, latest)" >&2 && exit 2 ;;
  esac
  if part "$name"; then RESULT[$name]=PASS; else RESULT[$name]=FAIL && failed=1; fi
done
echo "== summary"
for name in "${PARTS[@]}"; do
  echo "${RESULT[$name]} $name"
done
exit "$failed"
