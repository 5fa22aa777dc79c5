# Sourced by the GPU scripts (run_gpu.sh, gpu_checks.sh, gpu_sweep.sh) from the repository root: finds a Python whose
# torch sees CUDA and makes depthtune importable under it, without installing torch.
#
#   cuda_python            sets $py to the first of $PYTHON, the venv below, .venv/bin/python, python3, python whose
#                          torch sees a CUDA device (an absolute path: scripts may change folder); 1 when none does
#   use_python CANDIDATE   sets $py to CANDIDATE, made absolute the same way
#   depthtune_imports      makes `import depthtune.train` work under $py: the repository is on PYTHONPATH already; when
#                          that is not enough (numpy, h5py, scipy or pyyaml missing) it makes a venv in
#                          $DEPTHTUNE_GPU_VENV (default /tmp/depthtune-gpu-venv) that sees $py's packages, torch
#                          pinned, and runs `pip install -e .` there (needs PyPI), then points $py at it
#   platform_imports       makes `import ray, mlflow, optuna, plotly` work under $py (for sweeps and tracked runs):
#                          when they are missing and the bundle benchmarks/gpu_bundle.sh makes is here
#                          (data/gpu_site.tar.xz, carried to the GPU machine), unpacks it once into
#                          $DEPTHTUNE_GPU_SITE (default /tmp/depthtune-gpu-site) and appends that to PYTHONPATH;
#                          returns 1, saying why, when they still do not import
#
# `pip install torch==2.13.0` may bring a CPU-only wheel, so nothing here installs torch. The GPU machines lent to this
# project have a python3 with a CUDA torch, numpy, h5py, scipy and pyyaml, but neither PyPI nor ray, mlflow or optuna.

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
gpu_venv="${DEPTHTUNE_GPU_VENV:-/tmp/depthtune-gpu-venv}"
gpu_site="${DEPTHTUNE_GPU_SITE:-/tmp/depthtune-gpu-site}"
gpu_bundle="data/gpu_site.tar.xz"

has_cuda_torch() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
site_dirs() {
    "$1" -c 'import sysconfig; print("\n".join(sorted({sysconfig.get_path(k) for k in ("purelib", "platlib")})))'
}

use_python() {
    py=$(command -v "$1")
    [[ "$py" == /* ]] || py="$PWD/$py" # not resolved further: a venv's python is a link that must stay one
}

cuda_python() {
    py=""
    local candidate
    for candidate in ${PYTHON:-} "$gpu_venv/bin/python" .venv/bin/python python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && has_cuda_torch "$candidate"; then
            use_python "$candidate"
            return 0
        fi
    done
    return 1
}

depthtune_imports() {
    "$py" -c 'import depthtune.train' >/dev/null 2>&1 && return 0
    echo "gpu_python.sh: depthtune's imports fail under $py; installing it into $gpu_venv (needs PyPI)" >&2
    "$py" -m venv "$gpu_venv"
    # a .pth file puts $py's packages (its CUDA torch) on the new venv's path, also when $py is itself a venv
    site_dirs "$py" >"$(site_dirs "$gpu_venv/bin/python" | head -n 1)/depthtune-gpu-base.pth"
    "$py" -c 'import torch; print("torch==" + torch.__version__)' >"$gpu_venv/keep-torch.txt"
    "$gpu_venv/bin/python" -m pip install -q -c "$gpu_venv/keep-torch.txt" -e .
    py="$gpu_venv/bin/python"
}

platform_imports() {
    local check='import ray, mlflow, optuna, plotly'
    "$py" -c "$check" >/dev/null 2>&1 && return 0
    if [ ! -d "$gpu_site" ] && [ -f "$gpu_bundle" ]; then
        echo "gpu_python.sh: unpacking $gpu_bundle into $gpu_site" >&2
        # Python's tarfile rather than tar -J: the machine's image need not have xz
        "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
            "$gpu_bundle" "$gpu_site.partial" && mv "$gpu_site.partial" "$gpu_site"
    fi
    [ -d "$gpu_site" ] && export PYTHONPATH="$PYTHONPATH:$gpu_site"
    local error
    if ! error=$("$py" -c "$check" 2>&1); then
        echo "ray, mlflow, optuna or plotly do not import under $py ($(echo "$error" | tail -n 1)); make $gpu_bundle" \
            "with benchmarks/gpu_bundle.sh and carry it"
        return 1
    fi
}
