"""scripts/soak.py (the long-run check of every env) and the per-reset memory leak it guards against.

Issue 1b: every driving reset leaked ~0.3 MB. Cause: PyBullet's ``createVisualShape(GEOM_MESH,
vertices=..., indices=..., normals=...)`` keeps a reference to every list it is given (see
``kai_drive.sim.road._MeshArgs``). The memory test counts live Python objects across resets (the cause,
exactly) instead of asserting on RSS (noisy on a shared machine).
"""

from __future__ import annotations

import gc
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pybullet
import pytest
from pybullet_utils.bullet_client import BulletClient

import kai_drive  # noqa: F401  (registers the envs)
from kai_drive.sim.road import build_road
from kai_drive.sim.route import RoadLayout, Route

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("kai_drive_soak_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_soak_runs_episodes_and_reports_figures(soak):
    # lane-keep: random scenario factors; grasp: no factors (plain seeded resets)
    for env_id in ("lane-keep", "grasp"):
        res = soak.soak_env(env_id, 80, seed=3)
        assert res.steps == 80 and res.episodes >= 1 and res.error is None
        assert 0 < res.rss_start_mb <= res.rss_max_mb and res.rss_end_mb <= res.rss_max_mb
        assert math.isfinite(res.steps_per_s) and res.steps_per_s > 0


def test_random_factors_are_valid_scenarios(soak):
    env = gymnasium.make("KaiDrive/Highway-v0")
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(12):
        factors = soak.random_factors(env, rng)
        seen |= set(factors)
        _, info = env.reset(seed=i, options={"scenario": factors})  # raises on an invalid factor
        for key in ("traffic", "obstacles", "pedestrians", "distractors"):
            if key in factors:
                assert len(info["scenario"][key]) == len(factors[key])
    env.close()
    assert {"colors", "sensor_noise", "traffic", "obstacles"} <= seen
    grasp = gymnasium.make("KaiDrive/Grasp-v0")
    assert soak.random_factors(grasp, rng) is None  # no scenario factors: plain resets
    grasp.close()


def test_soak_detects_a_nonfinite_observation(soak):
    # a real wrapper around the real env corrupts the 30th observation
    with pytest.raises(soak.NonFiniteError, match=r"Highway-v0 episode \d+ .*step \d+: observation\['\w+'\] has 1 non-finite"):
        soak.soak_env("highway", 100, seed=0, wrap=lambda env: soak.InjectNonFinite(env, 30))
    with pytest.raises(soak.NonFiniteError, match="reward is inf"):
        soak.check_finite({"state": np.zeros(3, np.float32)}, float("inf"), "here")


def test_soak_cli_exits_nonzero_on_nonfinite():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "40", "--envs", "lane-keep", "--inject-nonfinite", "10"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "NON-FINITE: KaiDrive/LaneKeep-v0 episode" in proc.stderr
    assert "LaneKeep-v0" in proc.stdout and "FAILED" in proc.stdout


def _live_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_resets_leave_no_python_objects_behind(env_id):  # env_id: every catalogue env (conftest)
    """Before the fix every driving reset left ~2,000 lists alive (the mesh rows PyBullet kept)."""
    env = gymnasium.make(env_id)
    for i in range(3):  # warm-up: caches, pools, lazy imports
        env.reset(seed=i)
    before = _live_objects()
    for i in range(3, 9):
        env.reset(seed=i)
    grown = _live_objects() - before
    env.close()
    assert grown < 100, f"{env_id}: {grown} more live Python objects after 6 resets"


def test_build_road_keeps_no_reference_to_fresh_lists():
    """The road's mesh arguments are the same reusable buffers on every call: PyBullet's extra
    references to them (upstream leak) pin nothing new."""
    client = BulletClient(pybullet.DIRECT)
    route = Route.generate(np.random.default_rng(0), length_m=120.0)
    layout = RoadLayout()
    build_road(client, route, layout)
    before = _live_objects()
    for _ in range(3):
        client.resetSimulation()
        build_road(client, route, layout)
    assert _live_objects() - before < 50
    client.disconnect()
