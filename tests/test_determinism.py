"""An env is a pure function of (seed, options): any history of resets, factors and steps before a
``reset(seed, options)`` gives the same observation bytes as a fresh env, in this process and in
subprocess workers. (Regression: TinyRenderer kept the previous episode's light.)"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
import multiprocessing

import gymnasium
import numpy as np
from digests import obs_digest
import pybullet
import pytest
from pybullet_utils.bullet_client import BulletClient

import kai_drive  # noqa: F401  (registers the envs)
from kai_drive.sensors.camera import RENDERER_DEFAULT_LIGHT, full_light

DRIVING = ["KaiDrive/LaneKeep-v0", "KaiDrive/Follow-v0", "KaiDrive/Highway-v0", "KaiDrive/Crossing-v0"]
#: depth and segmentation on too, so every image the camera makes is checked
CONFIG = {"sensors.camera.depth": True, "sensors.camera.segmentation": True}
PROBE_STEPS = 4


def random_factors(rng: np.random.Generator) -> dict:
    """A random subset of appearance, noise and object factors (driving envs)."""

    def rgba():
        return [float(x) for x in rng.uniform(0.05, 1.0, 3)] + [1.0]

    out: dict = {}
    if rng.random() < 0.8:
        out["light"] = {
            "intensity": float(rng.uniform(0.2, 1.5)),
            "color": [float(x) for x in rng.uniform(0.4, 1.0, 3)],
            "direction": [float(x) for x in rng.uniform(-100, 100, 3)],
            "shadow": bool(rng.random() < 0.5),
        }
    if rng.random() < 0.6:
        out["colors"] = {k: rgba() for k in ("road", "ground", "marking", "barrier") if rng.random() < 0.7}
    if rng.random() < 0.5:
        out["sensor_noise"] = {"camera_noise_std": float(rng.uniform(0, 20)), "lidar_dropout": float(rng.uniform(0, 0.3))}
    if rng.random() < 0.5:
        out["distractors"] = [{"s_m": float(rng.uniform(5, 60)), "side": int(rng.choice([-1, 1])), "color": rgba()}]
    if rng.random() < 0.3:
        out["obstacles"] = [{"s_m": float(rng.uniform(20, 60)), "d_m": float(rng.uniform(-3, 3))}]
    return out


def digest(env: gymnasium.Env, seed: int, options: dict | None) -> str:
    """sha256 of every observation byte (and reward) of a reset and a few fixed-action steps."""
    return obs_digest(env, seed, options, steps=PROBE_STEPS)


def history(env: gymnasium.Env, rng: np.random.Generator, n_resets: int, driving: bool) -> None:
    """Random resets with random factors and random actions."""
    env.action_space.seed(int(rng.integers(2**31)))
    for _ in range(n_resets):
        options = {"scenario": random_factors(rng)} if driving else None
        env.reset(seed=int(rng.integers(10_000)), options=options)
        for _ in range(int(rng.integers(1, 6))):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                break


def probe_cases(env_id: str) -> list[tuple[int, dict | None]]:
    """(seed, options) pairs probed after the history: default factors and a shifted light + colours."""
    if env_id not in DRIVING:
        return [(5, None), (11, None)]
    shifted = {"scenario": {"light": {"intensity": 0.45, "color": [1.0, 0.75, 0.55], "direction": [60.0, -40.0, 40.0]},
                            "colors": {"road": [0.55, 0.45, 0.35, 1.0]}}}
    return [(5, None), (5, shifted)]


def history_then_probe(env_id: str, history_seed: int) -> list[str]:
    """Run in a subprocess worker: a random history, then the probes."""
    env = gymnasium.make(env_id, config=CONFIG)
    try:
        history(env, np.random.default_rng(history_seed), 4, env_id in DRIVING)
        return [digest(env, seed, options) for seed, options in probe_cases(env_id)]
    finally:
        env.close()


def fresh_digests(env_id: str) -> list[str]:
    out = []
    for seed, options in probe_cases(env_id):
        env = gymnasium.make(env_id, config=CONFIG)
        try:
            out.append(digest(env, seed, options))
        finally:
            env.close()
    return out


def test_history_does_not_change_observations(env_id):  # env_id: every catalogue env (conftest)
    fresh = fresh_digests(env_id)
    env = gymnasium.make(env_id, config=CONFIG)
    try:
        rng = np.random.default_rng(123)
        for _ in range(2):
            history(env, rng, 3, env_id in DRIVING)
            # interleave the probes with each other and with more history
            assert [digest(env, seed, options) for seed, options in probe_cases(env_id)] == fresh
    finally:
        env.close()


def test_history_does_not_change_observations_in_subprocess_workers():
    """Spawned workers, each with its own random history, agree with this process's fresh envs."""
    env_ids = ["KaiDrive/LaneKeep-v0", "KaiDrive/Grasp-v0"]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = {(e, s): pool.submit(history_then_probe, e, s) for e in env_ids for s in (7, 8)}
        results = {k: f.result(timeout=600) for k, f in futures.items()}
    for env_id in env_ids:
        fresh = fresh_digests(env_id)
        for s in (7, 8):
            assert results[(env_id, s)] == fresh, f"{env_id}: worker with history seed {s} differs from a fresh env"


def test_light_change_is_visible_and_undone():
    """A light factor changes the pixels of its own episode only."""
    env = gymnasium.make("KaiDrive/LaneKeep-v0")
    try:
        shifted = {"scenario": {"light": {"intensity": 0.45, "color": [1.0, 0.75, 0.55]}}}
        a, _ = env.reset(seed=3)
        b, _ = env.reset(seed=3, options=shifted)
        c, _ = env.reset(seed=3)
        assert np.abs(a["camera"].astype(int) - b["camera"].astype(int)).mean() > 5
        assert np.array_equal(a["camera"], c["camera"])
    finally:
        env.close()


def _scene(client: BulletClient) -> None:
    plane = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=[5, 5, 0.05], rgbaColor=[0.3, 0.6, 0.3, 1])
    client.createMultiBody(0, -1, plane, [0, 0, -0.05])
    box = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=[0.5, 0.5, 0.5], rgbaColor=[0.8, 0.2, 0.2, 1])
    client.createMultiBody(0, -1, box, [2, 0, 0.5])


def _image(client: BulletClient, **light) -> np.ndarray:
    view = pybullet.computeViewMatrix([-3, -2, 2], [2, 0, 0.5], [0, 0, 1])
    proj = pybullet.computeProjectionMatrixFOV(60, 1, 0.1, 50)
    rgba = client.getCameraImage(48, 48, view, proj, renderer=pybullet.ER_TINY_RENDERER, **light)[2]
    return np.asarray(rgba, dtype=np.uint8).reshape(48, 48, 4)


def test_renderer_default_light_is_tinyrenderers_and_the_renderer_keeps_light():
    """The premise of the fix: TinyRenderer's first image without light arguments equals the image
    with RENDERER_DEFAULT_LIGHT; after another light, calls without arguments keep that light, while
    calls with the complete default set get the default image back."""
    client = BulletClient(connection_mode=pybullet.DIRECT)
    try:
        _scene(client)
        first = _image(client)
        assert np.array_equal(_image(client, **RENDERER_DEFAULT_LIGHT), first)
        dim = full_light({"lightAmbientCoeff": 0.2, "lightColor": [1.0, 0.5, 0.5]})
        assert not np.array_equal(_image(client, **dim), first)
        assert not np.array_equal(_image(client), first)  # the renderer kept the dim light
        assert np.array_equal(_image(client, **RENDERER_DEFAULT_LIGHT), first)
    finally:
        client.disconnect()


def test_full_light_rejects_unknown_arguments():
    with pytest.raises(ValueError, match="lightColour"):
        full_light({"lightColour": [1, 1, 1]})
