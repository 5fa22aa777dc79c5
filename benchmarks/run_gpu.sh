#!/usr/bin/env bash
# GPU throughput on a CUDA machine with a copy of this repository: bash benchmarks/run_gpu.sh [gpu_throughput.py flags]
#
# Uses the first Python whose torch sees CUDA ($PYTHON, the venv below, .venv/bin/python, python3, python):
# `pip install torch==2.13.0` may bring a CPU-only wheel, so nothing here installs torch. The benchmark needs
# only torch, numpy, h5py, scipy and pyyaml besides the repository (run from its root, no install); when
# those are missing it makes a venv in $DEPTHTUNE_GPU_VENV (default /tmp/depthtune-gpu-venv) that sees that
# Python's packages, torch pinned, and runs `pip install -e .` there (needs PyPI). Writes
# $OUT/gpu_throughput.json and $OUT/gpu_throughput.log when OUT is set.
# About 3.5 minutes on an H200 (2026-11-27, torch 2.11): 12 eager settings and 3 with cudnn.benchmark in
# 50 s, then torch.compile (Inductor) of the fastest eager setting per model in 2.5 min (FCRN 85 s);
# `--compile all` compiles all four per model (roughly four times as long), `--compile off` takes about a
# minute, `--time-budget S` skips compiled settings not started within S seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

venv="${DEPTHTUNE_GPU_VENV:-/tmp/depthtune-gpu-venv}"
has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
site_dirs() { "$1" -c 'import sysconfig; print("\n".join(sorted({sysconfig.get_path(k) for k in ("purelib", "platlib")})))'; }

py=""
for candidate in ${PYTHON:-} "$venv/bin/python" .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && has_cuda_torch "$candidate"; then py="$candidate"; break; fi
done
if [ -z "$py" ]; then
    echo "run_gpu.sh: no Python here has a torch that sees a CUDA device, so nothing was measured (set PYTHON to one)"
    exit 0
fi

if ! "$py" -c 'import depthtune.train' >/dev/null 2>&1; then
    echo "run_gpu.sh: depthtune's imports fail under $py; installing it into $venv (needs PyPI)" >&2
    "$py" -m venv "$venv"
    # a .pth file puts $py's packages (its CUDA torch) on the new venv's path, also when $py is itself a venv
    site_dirs "$py" >"$(site_dirs "$venv/bin/python" | head -n 1)/depthtune-gpu-base.pth"
    "$py" -c 'import torch; print("torch==" + torch.__version__)' >"$venv/keep-torch.txt"
    "$venv/bin/python" -m pip install -q -c "$venv/keep-torch.txt" -e .
    py="$venv/bin/python"
fi

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
