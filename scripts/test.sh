#!/usr/bin/env bash
# The whole test suite, on a fresh machine: environment, test tools (promtool, hadolint), pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
bash scripts/install_test_tools.sh
. .venv/bin/activate
python -m pytest "$@"
