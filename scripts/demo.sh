#!/usr/bin/env bash
# The demo (docs/science.md): creates .venv if needed, then runs it (extra args go to it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python experiments/demo.py "$@"
