#!/usr/bin/env bash
# The GPU checks of one device lease, prepared to run unattended on one H100 or H200 (16 CPU cores):
#
#   bash benchmarks/gpu_checks.sh [STEP ...]      # STEPs, in this order by default: throughput bn loop sweep overhead
#
#   throughput     gpu_throughput.py --compile off, Net12, Net3, FCRN: eager training images/s and MFU       ~70 s
#   bn             batch_norm.py, FCRN then Net12 and Net3 (project variant): BN options under bf16        ~60 s
#   loop           gpu_loop.py, Net12 and FCRN, 3 loader workers, device_data_share 0 and 0.25, 1449
#                  frames, 3 epochs: loop/step                                                               ~120 s
#   sweep          gpu_sweep.sh: 4 Net12 trials at --gpus-per-trial 0.5, 2 epochs, tracked and registered,
#                  read back, the winner loaded by name                                                       ~150 s
#   overhead       platform_overhead.py: a paper Net12, 10 epochs, checkpoint_every 5, 4 CPUs and 3 loader
#                  workers, as the YAML trains it: tracked trial vs bare loop, the bare loop run ONCE (a b)    ~170 s
#   overhead-full  the same with the benchmark's whole protocol, bare loop before and after (a b a)          ~230 s
#
# The times are estimates from earlier H100/H200 runs of parts of these (nothing here has run on a GPU yet): the
# default steps add up to about 9.5 minutes, about what one device command may run (600 s: give the call
# timeout_s 600), so every step runs under `timeout` within one overall budget (GPU_CHECKS_BUDGET, default 570 s from
# the start): a step that would pass it is cut short, and a step with less than 30 s left is skipped, each said in the
# log. To fit, `overhead` is a subset of the benchmark's protocol: the bare loop runs once, not before and after the
# tracked run; on a dedicated GPU node the machine's speed should not drift the way this 2-core CPU's did, which is
# what the second bare run cancels. With the device time for two calls, run
# `bash benchmarks/gpu_checks.sh throughput bn loop sweep`, then `bash benchmarks/gpu_checks.sh overhead-full` at once
# on the same warm machine (the data file and the unpacked packages are kept there).
#
# Python: benchmarks/gpu_python.sh, as run_gpu.sh: the first Python whose torch sees CUDA (the machine's python3; the
# repository's .venv there has a CPU torch), the repository on PYTHONPATH. sweep and overhead also need ray, mlflow,
# optuna and plotly, which the GPU machines lack and cannot download: make data/gpu_site.tar.xz here with
# benchmarks/gpu_bundle.sh and carry it (run's carry: ["data/gpu_site.tar.xz"]); without it those two steps say so
# and are skipped. The scripts start no service of their own: run_sweep starts its mlflow server on 127.0.0.1 and a
# local Ray (`ray.init()` with Ray's own defaults), as `depthtune tune` does, and stops both at its end.
#
# Output: everything goes to the console and to $OUT/gpu_checks.log, figures to $OUT/gpu_throughput.json,
# batch_norm.json, gpu_loop.json and gpu_sweep.json (OUT unset: /tmp/depthtune-gpu-checks). Without CUDA it prints one
# line and exits 0.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benchmarks/gpu_python.sh

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(throughput bn loop sweep overhead)
for wanted in "${steps[@]}"; do
    case "$wanted" in
        throughput | bn | loop | sweep | overhead | overhead-full) ;;
        *) echo "gpu_checks.sh: unknown step $wanted (throughput bn loop sweep overhead overhead-full)" >&2; exit 2 ;;
    esac
done
if ! cuda_python; then
    echo "gpu_checks.sh: no Python here has a torch that sees a CUDA device, so nothing was measured (see PYTHON)"
    exit 0
fi
budget="${GPU_CHECKS_BUDGET:-570}"
out="${OUT:-/tmp/depthtune-gpu-checks}"
mkdir -p "$out"

# Runs "$@" as step $1 under the time left (at most $2 s); prints how it ended.
step() {
    local name="$1" most="$2"
    shift 2
    local left=$((budget - SECONDS))
    local limit=$((most < left ? most : left))
    if [ "$limit" -lt 30 ]; then
        echo "=== $name: skipped, ${left} s of the ${budget} s budget left"
        return
    fi
    echo "=== $name (at most ${limit} s, ${SECONDS} s in): $*"
    local started=$SECONDS rc=0
    timeout --kill-after=20 "$limit" "$@" || rc=$?
    local verdict="exit $rc"
    [ "$rc" -eq 124 ] && verdict="cut short at ${limit} s (timeout): its figures are incomplete"
    echo "=== $name: $verdict after $((SECONDS - started)) s"
}

# Everything a lease prints, in order, for the console and $out/gpu_checks.log.
checks() {
    depthtune_imports
    "$py" -c 'import sys, torch; print(f"python {sys.executable}, torch {torch.__version__},",
                                       f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()},",
                                       f"GPU {torch.cuda.get_device_name()}")'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
    echo "$(nproc) CPU cores, $(free -g | awk '/^Mem:/ {print $2}') GiB memory; steps: ${steps[*]}; budget ${budget} s"
    if platform_imports; then platform=1; else platform=""; fi

    data=""
    wants() { [[ " ${steps[*]} " == *" $1 "* ]]; }
    if wants loop || wants sweep || wants overhead || wants overhead-full; then
        data=$(timeout 180 "$py" benchmarks/nyu_sized.py --frames 1449 --scenes 48 --workers "$(nproc)" | tail -n 1)
        echo "data: ${data:-none: making the NYU-sized file failed} (${SECONDS} s in)"
    fi
    scratch=$(mktemp -d /tmp/depthtune-gpu-checks-XXXXXX)
    trap 'rm -rf "$scratch"' EXIT

    for name in "${steps[@]}"; do
        case "$name" in
            throughput)
                step throughput 100 "$py" benchmarks/gpu_throughput.py --models net12 net3 fcrn --compile off \
                    --json "$out/gpu_throughput.json"
                ;;
            bn)
                step bn 90 "$py" benchmarks/batch_norm.py --models fcrn net12 net3 --time-budget 60 \
                    --json "$out/batch_norm.json"
                ;;
            loop)
                step loop 180 "$py" benchmarks/gpu_loop.py --models net12 fcrn --frames 1449 --scenes 48 --workers 3 \
                    --device-data-share 0 0.25 --epochs 3 --data-dir data --json "$out/gpu_loop.json"
                ;;
            sweep)
                if [ -z "$data" ]; then echo "=== sweep: skipped, no data file"; continue; fi
                if [ -z "$platform" ]; then echo "=== sweep: skipped, ray/mlflow/optuna/plotly missing"; continue; fi
                step sweep 200 env OUT="$out" bash benchmarks/gpu_sweep.sh --model net12 --trials 4 --epochs 2 \
                    --gpus-per-trial 0.5 --frames 1449 --workdir "$scratch/sweep"
                rm -rf "$scratch/sweep"
                ;;
            overhead | overhead-full)
                if [ -z "$data" ]; then echo "=== $name: skipped, no data file"; continue; fi
                if [ -z "$platform" ]; then echo "=== $name: skipped, ray/mlflow/optuna/plotly missing"; continue; fi
                once=(--bare-once)
                [ "$name" = overhead-full ] && once=()
                step "$name" 300 "$py" benchmarks/platform_overhead.py --device cuda --profile paper --data "$data" \
                    --epochs 10 --checkpoint-every 5 --threads 4 --workers 3 --reps 1 "${once[@]}"
                ;;
        esac
    done
    echo "gpu_checks.sh: done in ${SECONDS} s; logs and figures in $out"
}

SECONDS=0
checks 2>&1 | tee -a "$out/gpu_checks.log"
