#!/usr/bin/env bash
# The README's main command: creates .venv if needed, then runs the Net12 sweep end to end
# (synthetic data unless --data, Ray Tune + MLflow, registry, summary). Extra args go to
# experiments/tune_net12.py. Run it from the folder where mlflow.db and mlruns/ should live.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python "$(dirname "${BASH_SOURCE[0]}")/../experiments/tune_net12.py" "$@"
