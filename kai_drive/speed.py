"""Env speed: steps/s of an env under random actions and its *sensor floor* (the library of
``python -m kai_drive.bench``).

The floor is the bare PyBullet calls of one control step in the same world (one ``stepSimulation`` of
``substeps`` physics steps, the same camera image and the same lidar sweep), timed from the same states as
the env's own steps (see :func:`bench_env`). Imports no torch (the benchmark reports whether it was).
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium

import kai_drive  # noqa: F401 - registers the envs
import kai_drive.tasks  # noqa: F401 - registers every task kind's spec
from kai_drive.catalog import env_yaml, resolve_env
from kai_drive.sensors import Camera, Lidar
from kai_drive.sim.world import RAY_MASK_WITHOUT_EGO
from kai_drive.specs import load_env_spec


#: sensor sets of envs with a lidar (driving)
DRIVING_SETS: dict[str, dict[str, Any]] = {
    "default (camera+lidar+state)": {},
    "state only": {"sensors": {"camera": {"enabled": False}, "lidar": {"enabled": False}}},
    "lidar+state": {"sensors": {"camera": {"enabled": False}}},
    "camera+state": {"sensors": {"lidar": {"enabled": False}}},
    "camera rgb+depth+seg": {"sensors": {"camera": {"depth": True, "segmentation": True}}},
}
#: sensor sets of envs without a lidar (grasping: a fixed RGB-D camera)
CAMERA_SETS: dict[str, dict[str, Any]] = {
    "default (as in the YAML)": {},
    "rgb+state": {"sensors": {"camera": {"depth": False, "segmentation": False}}},
    "rgb-d+state": {"sensors": {"camera": {"depth": True, "segmentation": False}}},
    "rgb+depth+seg": {"sensors": {"camera": {"depth": True, "segmentation": True}}},
    "state only": {"sensors": {"camera": {"enabled": False}}},
}


def sensor_sets(env_name: str) -> dict[str, dict[str, Any]]:
    """The sensor sets worth timing for ``env_name`` (driving sets when its YAML enables a lidar)."""
    spec = load_env_spec(env_yaml(env_name))
    return DRIVING_SETS if spec.sensors.lidar.enabled else CAMERA_SETS


def _floor_call(env):
    """A function doing the bare PyBullet calls of one control step in ``env``'s world, as now:
    one ``stepSimulation`` (``substeps`` physics steps), the same camera image(s), the same sweep(s)."""
    u = env.unwrapped
    world, client = u.world, u.world.client
    mount = u.task.sensor_mount(world)
    cams = [
        (c.width, c.height, c.view_matrix(mount), c._proj, c._flags, dict(getattr(c, "light", {})))
        for c in u.sensors
        if isinstance(c, Camera)
    ]
    rays = [l.rays(mount) for l in u.sensors if isinstance(l, Lidar)]
    flag = world.render_flag

    def call() -> None:
        client.stepSimulation()
        for w, h, view, proj, flags, light in cams:
            client.getCameraImage(w, h, view, proj, renderer=flag, flags=flags, **light)
        for frm, to in rays:
            client.rayTestBatch(frm, to, collisionFilterMask=RAY_MASK_WITHOUT_EGO)

    return call


def bench_env(env_name: str, config: dict, seconds: float, seed: int = 0) -> dict[str, float]:
    """Time ``env_name`` with ``config`` overrides under random actions.

    * steps/s: ``env.step`` alone (resets timed apart), and with resets included;
    * the floor, paired: before a step the physics state is saved, the bare PyBullet calls of one
      control step are timed from it, the state is restored, then ``env.step`` is timed from the very
      same state; so both see the same scene (a car scraping a barrier costs more physics than one
      cruising) and the ratio measures only what the env adds (Python, reward, info, observation).
    """
    env_id, _ = resolve_env(env_name)
    env = gymnasium.make(env_id, config=config, disable_env_checker=True)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(256)]
    for i in range(10):  # warm-up
        *_, term, trunc, _ = env.step(actions[i])
        if term or trunc:
            env.reset()
    steps, resets, t_step, t_reset = _time_steps(env, actions, seconds)
    env.reset(seed=seed + 1)
    n_pair, t_floor, t_env = _time_paired(env, actions, seconds / 2)
    env.close()
    sps = steps / t_step
    return {
        "steps_per_s": sps,
        "steps_per_s_with_resets": steps / (t_step + t_reset),
        "reset_ms": 1e3 * t_reset / max(resets, 1),
        "floor_per_s": n_pair / t_floor,
        "paired_steps_per_s": n_pair / t_env,
        "fraction_of_floor": t_floor / t_env,
        "steps": steps,
    }


def _time_steps(env: Any, actions: list, seconds: float) -> tuple[int, int, float, float]:
    """``(steps, resets, seconds in env.step, seconds in env.reset)`` of ``seconds`` of random driving."""
    steps, resets, t_step, t_reset = 0, 0, 0.0, 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        a = actions[steps % 256]
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(a)
        t_step += time.perf_counter() - t0
        steps += 1
        if term or trunc:
            t0 = time.perf_counter()
            env.reset()
            t_reset += time.perf_counter() - t0
            resets += 1
    return steps, resets, t_step, t_reset


def _time_paired(env: Any, actions: list, seconds: float) -> tuple[int, float, float]:
    """``(pairs, seconds of the floor calls, seconds of env.step)``, each pair timed from the same state."""
    world = env.unwrapped.world
    n_pair, t_floor, t_env = 0, 0.0, 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        floor = _floor_call(env)
        sid = world.save_state()
        world.restore_state(sid)  # both timings start from a just-restored state (cold contact caches)
        t0 = time.perf_counter()
        floor()
        t_floor += time.perf_counter() - t0
        world.restore_state(sid)
        world.remove_state(sid)
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(actions[n_pair % 256])
        t_env += time.perf_counter() - t0
        n_pair += 1
        if term or trunc:
            env.reset()
    return n_pair, t_floor, t_env
