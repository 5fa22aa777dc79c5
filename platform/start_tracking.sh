#!/usr/bin/env bash
# Start the shared MLflow tracking service (detached): mlflow server with the PostgreSQL backend,
# proxied artifacts and basic-auth, configured by the environment (see tracking.env.example).
#   platform/start_tracking.sh [ENV_FILE] [more `depthtune serve start` flags, e.g. --port 5001]
# Prints the server's URI, its log and how to stop it (platform/stop_tracking.sh [ENV_FILE]).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    env_file="$1"
    shift
    [ -f "$env_file" ] || { echo "start_tracking.sh: env file $env_file does not exist" >&2; exit 2; }
    case "$(stat -c %a "$env_file")" in
        *00) ;;
        *) echo "start_tracking.sh: warning: $env_file holds secrets but others can read it (chmod 600 $env_file)" >&2 ;;
    esac
    set -a
    # shellcheck disable=SC1090
    source "$env_file"
    set +a
fi
depthtune="$(command -v depthtune || echo "$repo_root/.venv/bin/depthtune")"
exec "$depthtune" serve start "$@"
