"""A wheel built from the repo, installed into a fresh venv and used from another directory, can
gymnasium.make every catalogue env (the YAML catalogues travel inside the wheel)."""

import pytest

from kai_drive.catalog import env_ids
from wheelenv import install_wheel, run_in


@pytest.mark.slow
def test_wheel_installs_and_makes_every_env(tmp_path):
    py = install_wheel(tmp_path)

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
    run = run_in(py, code, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "made" in run.stdout
