#!/usr/bin/env bash
# Regenerate the Python gRPC code from protos/ into the package (committed; a test checks
# freshness). Usage: scripts/gen_protos.sh [OUTPUT_ROOT]   (default: the repository root)
# protos/ is the include path and the .proto sits at densitywatch/api/v1/ under it, so the
# generated modules land in densitywatch/api/v1/ and import each other as
# `from densitywatch.api.v1 import densitywatch_pb2`.
#
# The generator is pinned, and it runs in a throwaway venv so that the environment it runs
# from (any protobuf, any grpcio-tools) cannot change the output. The gencode requires a
# runtime at least as new as the generator: protobuf >= its bundled protobuf (6.30.0) and
# grpcio >= its own version, which is why those are the lower bounds in pyproject.toml.
# 1.72.1 is the oldest grpcio-tools (1.72.0 is yanked) whose gencode is protobuf 6.x, the
# oldest major that protobuf's cross-version guarantee lets run on both 6.x (what
# tritonclient and MLServer allow) and 7.x (gencode of major V is supported on runtimes V
# and V+1). Exit status 3: the pinned generator could not be installed.
set -euo pipefail
GRPCIO_TOOLS_VERSION=1.72.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

TOOLS="$(mktemp -d)"
trap 'rm -rf "$TOOLS"' EXIT
"$PYTHON" -m venv "$TOOLS"
# Binary wheels only: building grpcio-tools from source compiles protoc (many minutes).
if ! "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check --only-binary :all: \
  "grpcio-tools==$GRPCIO_TOOLS_VERSION" >"$TOOLS/pip.log" 2>&1; then
  cat "$TOOLS/pip.log" >&2
  echo "gen_protos.sh: cannot install grpcio-tools==$GRPCIO_TOOLS_VERSION" >&2
  exit 3
fi

cd "$ROOT"
"$TOOLS/bin/python" -m grpc_tools.protoc -I protos \
  --python_out="$OUT" --grpc_python_out="$OUT" --pyi_out="$OUT" \
  protos/densitywatch/api/v1/densitywatch.proto
