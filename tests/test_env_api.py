"""The gymnasium contract, for every catalogue env."""

import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import kai_drive  # noqa: F401
from kai_drive.catalog import UnknownEnvError, env_ids, resolve_env
from kai_drive.config import SpecError


def test_every_catalogue_env_is_registered(env_id):
    assert env_id in gymnasium.registry
    assert resolve_env(env_ids()[env_id]) == (env_id, env_ids()[env_id])


def test_gymnasium_and_sb3_checkers_pass(env_id, make_env):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = make_env(env_id, disable_env_checker=True)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)


def _is_driving(env):
    return "lidar" in env.observation_space.spaces


def _gentle_action(env):
    """Steering 0 / mild throttle for driving envs; zeros (hold still) for any other action space."""
    a = np.zeros(env.action_space.shape, np.float32)
    if _is_driving(env):
        a[1] = 0.3
    return a


def test_observation_matches_space_and_spec(env_id, make_env):
    env = make_env(env_id)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert obs["camera"].shape == (64, 64, 3) and obs["camera"].dtype == np.uint8
    assert "state" in obs and obs["state"].dtype == np.float32
    if _is_driving(env):
        assert obs["lidar"].shape == (64,) and obs["lidar"].dtype == np.float32
        assert 0.0 <= obs["lidar"].min() and obs["lidar"].max() <= 1.0
        assert env.action_space.shape == (2,)
    assert "scenario" in info
    for _ in range(5):
        obs, r, term, trunc, info = env.step(_gentle_action(env))
        assert env.observation_space.contains(obs)
        assert np.isfinite(r)
    common = ("cost", "is_success", "reward_terms")
    driving = ("lateral_offset_m", "heading_error_rad", "speed_mps", "distance_m", "route_completion",
               "collision", "collision_with", "off_road", "lane_invasion")
    for key in common + (driving if _is_driving(env) else ()):
        assert key in info, key
    assert info["cost"] in (0.0, 1.0)
    assert abs(sum(info["reward_terms"].values()) - r) < 1e-6


def test_camera_sees_the_scene(env_id, make_env):
    env = make_env(env_id)
    obs, _ = env.reset(seed=1)
    img = obs["camera"].astype(np.int32)
    assert img.std() > 5  # not a blank frame
    if _is_driving(env):  # the lower part (road) differs from the upper part (sky, horizon)
        assert np.abs(img[40:].mean(axis=(0, 1)) - img[:20].mean(axis=(0, 1))).max() > 10


def test_same_seed_same_bytes(env_id, make_env):
    a, b = make_env(env_id), make_env(env_id)
    a.action_space.seed(0)
    actions = [a.action_space.sample() for _ in range(30)]
    oa, ia = a.reset(seed=42)
    ob, ib = b.reset(seed=42)
    for k in oa:
        assert oa[k].tobytes() == ob[k].tobytes(), k
    assert ia["scenario"] == ib["scenario"]
    for act in actions:
        ra = a.step(act)
        rb = b.step(act)
        for k in ra[0]:
            assert ra[0][k].tobytes() == rb[0][k].tobytes(), k
        assert ra[1:4] == rb[1:4]
        if ra[2] or ra[3]:
            break


def test_different_seeds_give_different_roads(env_id, make_env):
    env = make_env(env_id)
    o1, i1 = env.reset(seed=1)
    o2, i2 = env.reset(seed=2)
    assert i1["scenario"] != i2["scenario"]
    assert o1["camera"].tobytes() != o2["camera"].tobytes()


def test_road_seed_and_noise_seed_are_separate(env_id, make_env):
    env = make_env(env_id)
    if not _is_driving(env):
        pytest.skip("road_seed is a driving option")
    env = make_env(env_id, config={"sensors": {"lidar": {"noise_std": 0.05}}})
    o1, i1 = env.reset(options={"road_seed": 5, "noise_seed": 1})
    o2, i2 = env.reset(options={"road_seed": 5, "noise_seed": 2})
    o3, _ = env.reset(options={"road_seed": 5, "noise_seed": 1})
    assert i1["scenario"]["route_length_m"] == i2["scenario"]["route_length_m"]
    assert o1["camera"].tobytes() == o2["camera"].tobytes()  # same road, camera noise off
    assert o1["lidar"].tobytes() != o2["lidar"].tobytes()  # different lidar noise
    assert o1["lidar"].tobytes() == o3["lidar"].tobytes()


def test_bad_actions(env_id, make_env):
    env = make_env(env_id)
    env.reset(seed=0)
    n = env.action_space.shape[0]
    bad = np.zeros(n, np.float32)
    bad[0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(bad)
    bad[0], bad[-1] = 0.0, np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(bad)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(n + 1, np.float32))
    # finite out-of-range actions are clipped, not rejected
    big = np.where(np.arange(n) % 2 == 0, 5.0, -7.0).astype(np.float32)
    obs, *_ = env.step(big)
    assert env.observation_space.contains(obs)


def test_config_overrides_and_errors(env_id, make_env):
    env = make_env(env_id, config={"sensors": {"camera": {"width": 32, "height": 24}}, "sensors.lidar.beams": 16})
    obs, _ = env.reset(seed=0)
    assert obs["camera"].shape == (24, 32, 3)
    if "lidar" in obs:
        assert obs["lidar"].shape == (16,)
    with pytest.raises(SpecError, match=r"sensors\.camera\.widht: unknown key"):
        gymnasium.make(env_id, config={"sensors": {"camera": {"widht": 32}}})
    with pytest.raises(SpecError, match=r"sensors\.lidar\.beams"):
        gymnasium.make(env_id, config={"sensors.lidar.beams": -3})
    with pytest.raises(SpecError, match=r"world"):
        gymnasium.make(env_id, config={"world": {"physics_hz": 250, "control_hz": 20}})


def test_unknown_env_suggests():
    with pytest.raises(UnknownEnvError, match="Did you mean 'lane-keep'"):
        resolve_env("lane-kep")


def test_render_rgb_array(env_id, make_env):
    env = make_env(env_id, render_mode="rgb_array", config={"render": {"width": 96, "height": 64}})
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 5


def test_close_is_idempotent(env_id):
    env = gymnasium.make(env_id)
    env.reset(seed=0)
    env.close()
    env.close()


def test_many_envs_in_one_process(env_id, make_env):
    envs = [make_env(env_id) for _ in range(4)]
    first = [e.reset(seed=7)[0]["camera"].tobytes() for e in envs]
    assert len(set(first)) == 1
    for e in envs:
        e.step(e.action_space.high * 0.5)
    # stepping one world does not move the others
    assert envs[0].reset(seed=7)[0]["camera"].tobytes() == first[0]


def test_make_in_fresh_process_without_import(env_id):
    code = (
        "import gymnasium, numpy as np\n"
        f"env = gymnasium.make('kai_drive:{env_id}')\n"
        "obs, info = env.reset(seed=0)\n"
        "print(sorted(obs), env.observation_space['camera'].shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "camera" in out.stdout


def test_async_vector_env_workers(env_id):
    vec = gymnasium.vector.AsyncVectorEnv([lambda: gymnasium.make(f"kai_drive:{env_id}")] * 2)
    try:
        obs, info = vec.reset(seed=[1, 1])
        assert obs["camera"].shape[0] == 2
        assert obs["camera"][0].tobytes() == obs["camera"][1].tobytes()  # same seed in two processes
        obs, *_ = vec.step(np.zeros((2,) + vec.single_action_space.shape, np.float32))
    finally:
        vec.close()


def test_task_registry_contract():
    """Each task kind registers its class (a Task, of a known family) with the spec model of its section."""
    from kai_drive.catalog import task_family
    from kai_drive.tasks import FAMILIES, REGISTRY, Task

    assert {"lane_keep", "drive", "grasp"} <= set(REGISTRY)
    for kind, entry in REGISTRY.items():
        assert issubclass(entry.task_cls, Task) and entry.task_cls.family in FAMILIES
        assert entry.spec_model().kind == kind
    assert task_family("lane-keep") == "driving" and task_family("grasp") == "grasp"
