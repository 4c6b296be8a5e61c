"""Build the repo's wheel and install it alone into a fresh venv (tests/test_wheel.py, tests/test_pretrained.py).

The heavy dependencies come from the test's own environment: a ``.pth`` in the new venv appends this
environment's site-packages after the venv's own, so only kai-drive itself is installed from the wheel."""

from __future__ import annotations

import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def install_wheel(tmp_path: Path) -> Path:
    """The python of a fresh venv under ``tmp_path`` with the freshly built kai-drive wheel installed."""
    dist = tmp_path / "dist"
    # without hatchling here, pip builds in an isolated env (hatchling from pip's cache: slower)
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(dist),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list(dist.glob("kai_drive-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "zz_deps.pth").write_text("\n".join(ours) + "\n")
    inst = subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheels[0])],
                          capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    return py


def run_in(py: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``py -c code`` from ``cwd``, without this checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
