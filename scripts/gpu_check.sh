#!/usr/bin/env bash
# GPU check in one call (< 8 minutes on one GPU): EGL vs TinyRenderer env speed, EGL under a light
# change, encoder throughput on cuda (batch 1..4096), 20k steps of the default training on cuda.
#
# On a machine with a GPU and pip access:   pip install -e . && bash scripts/gpu_check.sh OUT_DIR
# On a machine without a registry, bring wheels first (here, where pip works):
#   bash scripts/gpu_wheels.sh            # -> .whl/ (pybullet, gymnasium, SB3, pydantic, captum, ...)
# then, there, from the repository root:   bash scripts/gpu_check.sh OUT_DIR
# It uses the python3 that has a CUDA torch; kai_drive is imported from this source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check}
mkdir -p "$out"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kai-site .whl/*.whl
  export PYTHONPATH="/tmp/kai-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
timeout 470 python3 scripts/gpu_check.py --out "$out" 2>&1 | tee "$out/gpu_check.log"
