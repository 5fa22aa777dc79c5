#!/usr/bin/env bash
# The README's test command: creates .venv if needed, then runs the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# Two workers: most of the suite waits on servers, Ray and subprocesses, so a second worker uses the
# idle core; the tests that share the session's finished sweep are grouped onto one worker
# (xdist_group marks) so that it is built once.
exec python -m pytest -n 2 --dist loadgroup "$@"
