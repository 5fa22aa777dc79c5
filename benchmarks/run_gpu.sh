#!/usr/bin/env bash
# GPU throughput on a CUDA machine with a copy of this repository: bash benchmarks/run_gpu.sh [gpu_throughput.py flags]
#
# Uses the first Python whose torch sees CUDA (benchmarks/gpu_python.sh says which it tries, and why nothing here
# installs torch). The benchmark needs only torch, numpy, h5py, scipy and pyyaml besides the repository (run from its
# root, no install); when those are missing gpu_python.sh installs the repository into a venv (needs PyPI). Writes
# $OUT/gpu_throughput.json and $OUT/gpu_throughput.log when OUT is set.
# About 3.5 minutes on an H200 (2026-11-27, torch 2.11): 12 eager settings and 3 with cudnn.benchmark in
# 50 s, then torch.compile (Inductor) of the fastest eager setting per model in 2.5 min (FCRN 85 s);
# `--compile all` compiles all four per model (roughly four times as long), `--compile off` takes about a
# minute, `--time-budget S` skips compiled settings not started within S seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benchmarks/gpu_python.sh

if ! cuda_python; then
    echo "run_gpu.sh: no Python here has a torch that sees a CUDA device, so nothing was measured (set PYTHON to one)"
    exit 0
fi
depthtune_imports

"$py" -c 'import sys, torch; print(f"python {sys.executable}\ntorch {torch.__version__}, CUDA {torch.version.cuda}, GPU {torch.cuda.get_device_name()}")'
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true

args=("$@")
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    args+=(--json "$OUT/gpu_throughput.json")
    "$py" benchmarks/gpu_throughput.py "${args[@]}" 2>&1 | tee "$OUT/gpu_throughput.log"
else
    "$py" benchmarks/gpu_throughput.py "${args[@]}"
fi
