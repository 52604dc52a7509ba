#!/usr/bin/env bash
# Regenerate the Python gRPC code from protos/ (committed; tests/protos checks freshness).
# Usage: scripts/gen_protos.sh [OUTPUT_ROOT]   (default: the repository root)
# Protos are compiled with the repository root as the include path, so generated imports
# read `from protos.densitywatch.v1 import densitywatch_pb2` and work as a package.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
cd "$ROOT"
"$PYTHON" -m grpc_tools.protoc -I . \
  --python_out="$OUT" --grpc_python_out="$OUT" --pyi_out="$OUT" \
  protos/densitywatch/v1/densitywatch.proto
for d in protos protos/densitywatch protos/densitywatch/v1; do
  touch "$OUT/$d/__init__.py"
done
