#!/usr/bin/env bash
# Makes data/gpu_site.tar.xz: the Python packages that sweeps and tracked runs need and the lent GPU machines lack, for
# carrying there (run's `carry: ["data/gpu_site.tar.xz"]`; benchmarks/gpu_python.sh unpacks it on the machine).
#
#   bash benchmarks/gpu_bundle.sh [--python-version 3.12]     # needs PyPI here; about 6 minutes on 2 cores (xz)
#
# The GPU machines have a python3 (3.12, x86-64) with a CUDA torch, numpy, h5py, scipy, pyyaml, pandas, pyarrow and
# more, but no ray, mlflow or optuna, and no package registry. Their wheels for that Python are 124 MB, over the 64 MiB
# a device call carries; unpacked, with the parts of ray a local sweep never loads left out (Java jars, RLlib, Serve,
# the LLM libraries, the dashboard's web page), and packed with xz, they are about 46 MiB. PACKAGES are what
# depthtune's dependencies need beyond the packages the machines' image lists (read 2026-11-17); their versions are
# this checkout's .venv's ($VENV_PYTHON), so the machine runs what the tests here ran. Nothing is installed here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_version=3.12
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) python_version="$2"; shift ;;
        *) echo "gpu_bundle.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
venv_python="${VENV_PYTHON:-.venv/bin/python}"
bundle=data/gpu_site.tar.xz
PACKAGES=(
    alembic annotated-types blinker cachetools cffi colorlog cryptography databricks-sdk docker fastapi flask
    flask-cors gitdb gitpython google-auth graphene graphql-core graphql-relay gunicorn huey importlib-metadata
    itsdangerous jsonschema jsonschema-specifications mako mlflow mlflow-skinny mlflow-tracing opentelemetry-api
    opentelemetry-proto opentelemetry-sdk opentelemetry-semantic-conventions optuna plotly prettytable pyasn1
    pyasn1-modules pycparser pydantic pydantic-core python-dotenv ray referencing rpds-py skops smmap sqlalchemy
    sqlparse starlette tensorboardx typing-inspection uvicorn wcwidth
)
RAY_UNUSED=(ray/jars ray/rllib ray/serve ray/llm ray/dashboard/client)

specs=$("$venv_python" -c '
import importlib.metadata, sys
print(" ".join(f"{name}=={importlib.metadata.version(name)}" for name in sys.argv[1:]))' "${PACKAGES[@]}")
work=$(mktemp -d /tmp/depthtune-gpu-bundle-XXXXXX)
trap 'rm -rf "$work"' EXIT
platforms=()
for platform in manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=(--platform "${platform}_x86_64")
done
# shellcheck disable=SC2086 # one word per package
"$venv_python" -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    "${platforms[@]}" -d "$work/wheels" $specs
mkdir -p "$work/site"
for wheel in "$work"/wheels/*.whl; do
    unzip -q -o "$wheel" -d "$work/site"
done
for unused in "${RAY_UNUSED[@]}"; do
    rm -rf "${work:?}/site/$unused"
done
mkdir -p "$(dirname "$bundle")"
tar -C "$work/site" -cf - . | xz -T0 -9 >"$bundle.partial"
mv "$bundle.partial" "$bundle"
echo "gpu_bundle.sh: $bundle, $(du -m "$bundle" | cut -f1) MiB: ${#PACKAGES[@]} packages for CPython $python_version" \
    "(x86-64); carry it with the repository, which must stay under 64 MiB with it"
