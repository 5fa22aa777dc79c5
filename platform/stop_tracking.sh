#!/usr/bin/env bash
# Stop the tracking service that start_tracking.sh started (its whole process group, found by the
# pid file in $DEPTHTUNE_STATE_DIR or --state-dir).
#   platform/stop_tracking.sh [ENV_FILE] [--state-dir DIR]
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    env_file="$1"
    shift
    [ -f "$env_file" ] || { echo "stop_tracking.sh: env file $env_file does not exist" >&2; exit 2; }
    set -a
    # shellcheck disable=SC1090
    source "$env_file"
    set +a
fi
depthtune="$(command -v depthtune || echo "$repo_root/.venv/bin/depthtune")"
exec "$depthtune" serve stop "$@"
