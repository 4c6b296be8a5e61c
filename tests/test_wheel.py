"""A wheel built from the repo, installed into a fresh venv and used from another directory, can
gymnasium.make every catalogue env (the YAML catalogues travel inside the wheel)."""

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from kai_drive.catalog import env_ids

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_and_makes_every_env(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list(dist.glob("kai_drive-*.whl"))
    assert len(wheels) == 1

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # the heavy dependencies come from this test's environment (a .pth appends its site-packages,
    # after the new venv's own), so only kai-drive itself is installed from the wheel
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "zz_deps.pth").write_text("\n".join(ours) + "\n")
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheels[0])],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]

    ids = sorted(env_ids())
    code = (
        "import gymnasium, kai_drive, pathlib\n"
        "pkg = pathlib.Path(kai_drive.__file__).parent\n"
        "assert 'site-packages' in str(pkg) and pkg.joinpath('_catalog', 'envs').is_dir(), pkg\n"
        "from kai_drive.perception import shipped_weights\n"
        "assert 'lane-keep' in shipped_weights(), shipped_weights()\n"
        f"for env_id in {ids!r}:\n"
        "    env = gymnasium.make('kai_drive:' + env_id)\n"
        "    obs, info = env.reset(seed=0)\n"
        "    env.step(env.action_space.sample())\n"
        "    env.close()\n"
        "print('made', len(gymnasium.registry))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "made" in run.stdout
