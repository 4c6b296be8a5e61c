#!/usr/bin/env bash
# Wheels that scripts/gpu_check.sh needs on a GPU machine that reaches no registry. That machine's
# python3 is 3.12 with a CUDA torch, numpy, pyyaml, matplotlib, imageio, tqdm, rich, tensorboard and
# cloudpickle; it lacks pybullet, gymnasium, stable-baselines3, pydantic and captum.
# PyPI has no cp312 wheel of pybullet 3.2.7, so this builds one from the sdist with a local python3.12
# (about 20-30 CPU-minutes) and strips pybullet_data down to what the arm env needs (the wheel must
# fit the 64 MiB a device call may carry). Run it here, where pip works, before asking for a device:
#   bash scripts/gpu_wheels.sh        # -> .whl/  (add /.whl/ to .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/.."
py312=${PY312:-python3.12}
if ! "$py312" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
  py312=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 2>/dev/null | tail -1)
  [ -n "$py312" ] || { echo "need a python3.12 (set PY312=/path/to/python3.12)" >&2; exit 1; }
fi
mkdir -p .whl
plat=()
for n in 2_28 2_27 2_17 2014 1; do
  case $n in 2014|1) plat+=(--platform "manylinux${n}_x86_64");; *) plat+=(--platform "manylinux_${n}_x86_64");; esac
done
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl "$@"; }
get gymnasium==1.4.0 farama-notifications==0.0.6 stable-baselines3==2.9.2 \
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 captum==0.9.0
if ! ls .whl/pybullet-*cp312*.whl >/dev/null 2>&1; then
  work=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: pybullet==3.2.7 -d "$work"
  "$py312" -m venv "$work/venv"
  "$work/venv/bin/pip" install -q wheel setuptools
  MAX_JOBS=$(nproc) "$work/venv/bin/pip" wheel -q --no-deps --no-build-isolation "$work"/pybullet-3.2.7.tar.gz -w "$work/built"
  "$work/venv/bin/python" -m wheel unpack -d "$work/unpacked" "$work"/built/pybullet-*.whl
  data=$(echo "$work"/unpacked/pybullet-*/pybullet_data)
  find "$data" -mindepth 1 -maxdepth 1 ! -name '__init__.py' ! -name 'franka_panda' ! -name 'table' ! -name 'tray' \
       -exec rm -rf {} +
  "$work/venv/bin/python" -m wheel pack -d .whl "$work"/unpacked/pybullet-*
  rm -rf "$work"
fi
ls -la .whl
du -sh .whl
