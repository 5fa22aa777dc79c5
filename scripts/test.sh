#!/usr/bin/env bash
# The README's test command: creates .venv if needed, then runs the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "$@"
