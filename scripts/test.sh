#!/usr/bin/env bash
# The README's test command: creates .venv if needed, then runs the whole test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# Two workers: most of the suite waits on servers, Ray and subprocesses, so a second worker uses the
# idle core; the tests that share the session's finished sweep are grouped onto one worker
# (xdist_group marks) so that it is built once. The tests marked `alone` depend on the machine's
# memory use staying put, so they are left out there and run afterwards, by themselves.
parallel=0
python -m pytest -n 2 --dist loadgroup --alone skip "$@" || parallel=$?
alone=0
python -m pytest -n 0 --alone only "$@" || alone=$?
# Exit status 5 is pytest's "no tests collected": fine for one phase, not for both.
if [ "$parallel" = 5 ] && [ "$alone" = 5 ]; then exit 5; fi
[ "$parallel" = 5 ] && parallel=0
[ "$alone" = 5 ] && alone=0
exit $((parallel > alone ? parallel : alone))
