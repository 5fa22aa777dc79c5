#!/usr/bin/env bash
# A sweep on one GPU as a user runs it, then what it did, read back from its MLflow store:
#
#   bash benchmarks/gpu_sweep.sh [--model net12] [--trials 4] [--epochs 3] [--gpus-per-trial 0.5] [--frames 1449]
#                                [--workdir DIR]
#   bash benchmarks/gpu_sweep.sh --smoke     # the same path on CPU: cpu profile, 64 frames, 2 trials, 1 epoch, no GPU
#
# The sweep is `depthtune tune MODEL --profile paper --data FILE --num-samples N --gpus-per-trial G --epochs E` (run
# as `python -m depthtune.cli`, the same entry point, so that no install is needed) on an NYU-sized synthetic file
# (benchmarks/nyu_sized.py: 1449 frames of 48 scenes, kept in data/), in an empty working folder: as without
# --tracking-uri, it starts its own mlflow server on 127.0.0.1 in front of ./mlflow.db there and a local Ray
# (`ray.init()`, Ray's defaults; this script starts no service itself), runs the shipped YAML's paper configuration
# (Optuna TPE + ASHA, the paper-settings trial first, 4 CPUs and 3 loader workers per trial, tracking, system metrics
# every 5 s, checkpoints) and registers the winner. MLFLOW_TRACKING_URI,
# RAY_ADDRESS and DEPTHTUNE_STORAGE_PATH are unset for it. Then benchmarks/gpu_sweep_report.py reads that folder's
# mlflow.db with MlflowClient and prints trials/hour, each trial's images/s, GPU utilisation and peak GPU memory, and
# loads the registered winner by name (depthtune.load_model("MODEL@champion")) and predicts one frame.
#
# Needs a Python whose torch sees CUDA and, beside it, ray, mlflow, optuna and plotly (benchmarks/gpu_python.sh finds
# them, or unpacks data/gpu_site.tar.xz from benchmarks/gpu_bundle.sh). Without CUDA and without --smoke it measures
# nothing and exits 0. Writes $OUT/gpu_sweep.json and $OUT/gpu_sweep.log when OUT is set. Not measured on a GPU yet:
# estimated 2-3 minutes for the defaults on an H100 (4 trials, 2 at a time, 3 epochs of 1159 frames, then the
# winner's test evaluation and registration); the smoke run takes about 4 minutes on a 2-core CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benchmarks/gpu_python.sh

model=net12 trials=4 epochs=3 gpus=0.5 frames=1449 scenes=48 workdir="" smoke=""
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --model) model="$2"; shift ;;
        --trials) trials="$2"; shift ;;
        --epochs) epochs="$2"; shift ;;
        --gpus-per-trial) gpus="$2"; shift ;;
        --frames) frames="$2"; shift ;;
        --workdir) workdir="$2"; shift ;;
        *) echo "gpu_sweep.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "$smoke" ]; then
    profile=cpu trials=2 epochs=1 gpus=0 frames=64 scenes=8
    use_python "${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
else
    profile=paper
    if ! cuda_python; then
        echo "gpu_sweep.sh: no Python here has a torch that sees a CUDA device, so nothing was measured (--smoke: CPU)"
        exit 0
    fi
    depthtune_imports
fi
platform_imports || exit 1

workdir="${workdir:-$(mktemp -d /tmp/depthtune-gpu-sweep-XXXXXX)}"
mkdir -p "$workdir"
log=/dev/null json=()
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    log="$OUT/gpu_sweep.log" json=(--json "$OUT/gpu_sweep.json")
fi
data=$("$py" benchmarks/nyu_sized.py --frames "$frames" --scenes "$scenes" --workers "$(nproc)" | tail -n 1)
name="gpu-sweep-$model"
sweep=("$py" -m depthtune.cli tune "$model" --profile "$profile" --data "$data" --num-samples "$trials"
    --gpus-per-trial "$gpus" --epochs "$epochs" --name "$name" --storage-path "$workdir/ray_results")
echo "gpu_sweep.sh: in $workdir: ${sweep[*]}" | tee "$log"
SECONDS=0
(cd "$workdir" && env -u MLFLOW_TRACKING_URI -u RAY_ADDRESS -u DEPTHTUNE_STORAGE_PATH "${sweep[@]}") 2>&1 |
    tee -a "$log"
wall=$SECONDS
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false # the load by name below would draw a bar per file
"$py" benchmarks/gpu_sweep_report.py --workdir "$workdir" --name "$name" --wall-seconds "$wall" "${json[@]}" 2>&1 |
    tee -a "$log"
