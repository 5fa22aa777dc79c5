#!/usr/bin/env bash
# Creates .venv with depthtune and its test tools when it is missing, then activates it.
# Sourced by scripts/sweep.sh, scripts/demo.sh and scripts/test.sh so that both README commands work on a
# machine with nothing installed. DEPTHTUNE_TORCH picks the torch requirement to pre-install
# (default: the CPU build 2.13.0; set it to e.g. "torch>=2.4" on a CUDA machine).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
stamp="$venv/.depthtune-installed"
if [ ! -f "$stamp" ] || [ "$repo_root/pyproject.toml" -nt "$stamp" ]; then
    started=$SECONDS
    log="$(mktemp)"
    exec 3>&2 # the terminal, for progress while the installers' output goes to the log
    step() { echo "[depthtune] $1 ($((SECONDS - started)) s)" >&3; }
    step "creating the environment in $venv (first run only)"
    if ! {
        python3 -m venv "$venv" &&
        "$venv/bin/python" -m pip install --upgrade pip &&
        step "installing ${DEPTHTUNE_TORCH:-torch==2.13.0}" &&
        "$venv/bin/python" -m pip install "${DEPTHTUNE_TORCH:-torch==2.13.0}" &&
        # the tests read torchvision's vgg16/resnet50 definitions (tests/torchvision_source.py); only
        # the release made for torch 2.13.0, without dependencies, so that torch is never replaced
        if [ -z "${DEPTHTUNE_TORCH:-}" ]; then "$venv/bin/python" -m pip install --no-deps torchvision==0.28.0; fi &&
        step "installing depthtune with ray[tune], mlflow, optuna and the test tools" &&
        "$venv/bin/python" -m pip install -e "$repo_root[dev]"
    } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "[depthtune] installing the environment failed; full log: $log" >&2
        exit 1
    fi
    rm -f "$log"
    touch "$stamp"
    step "environment ready"
    exec 3>&-
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
cd "$repo_root"
