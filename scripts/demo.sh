#!/usr/bin/env bash
# The main job, on a fresh machine: set up, train and calibrate the bundled demo streams,
# serve them, score a mix of normal and anomalous points, and show where the metrics are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
exec python -m densitywatch.demo "$@"
