#!/usr/bin/env bash
# The README's main command: creates .venv if needed, then runs the demo (extra args go to it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python experiments/demo.py "$@"
