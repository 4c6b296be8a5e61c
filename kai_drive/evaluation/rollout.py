"""Rollouts through the env's public API only: ``reset(seed, options={"road_seed", "noise_seed",
"scenario"})``, step infos, and ``save_state`` / ``restore_state`` to branch.

A :class:`Trajectory` keeps what the metrics and the causal engine need: the realised scenario record,
the actions, the step infos (without the bulky ``reward_terms``), optionally observations and chase
camera frames. Episodes are identified by their seed: ``road_seed = noise_seed = seed``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium
import numpy as np

from kai_drive.config import set_dotted
from kai_drive.metrics import episode_outcome
from kai_drive.sensors.base import missing_value

__all__ = ["Trajectory", "make_env", "rollout", "apply_overrides", "ObsTransform", "sensor_transform"]

ObsTransform = Callable[[dict, int], dict]


@dataclass
class Trajectory:
    seed: int
    scenario: dict
    reset_info: dict
    dt: float
    actions: list = field(default_factory=list)
    infos: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    obs: dict = field(default_factory=dict)  # step -> observation (the one the policy acted on)
    frames: list = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    horizon_cut: bool = False  # stopped by the evaluator's max_steps

    @property
    def steps(self) -> int:
        return len(self.actions)

    def actions_array(self) -> np.ndarray:
        return np.asarray(self.actions, dtype=np.float64).reshape(len(self.actions), -1)

    @property
    def outcome(self) -> str:
        """Why the episode ended (:func:`kai_drive.metrics.episode_outcome`)."""
        return episode_outcome(self.infos[-1] if self.infos else {}, self.terminated, self.truncated, self.horizon_cut)


def make_env(env_id: str, env_config: dict | None = None, render_mode: str | None = None) -> gymnasium.Env:
    import kai_drive  # noqa: F401  (registers the catalogue)
    from kai_drive.catalog import resolve_env

    env_id, _ = resolve_env(env_id)
    return gymnasium.make(env_id, config=dict(env_config or {}), render_mode=render_mode)


def _resolve(value: Any, ctx: dict) -> Any:
    """``"+40"`` -> ego start arc length + 40 m; ``"@ego_lane"`` -> lateral offset of the ego lane's centre."""
    if isinstance(value, str):
        if value.startswith("+") or value.startswith("-"):
            return ctx["start_s_m"] + float(value)
        if value == "@ego_lane":
            return ctx["ego_lane_d_m"]
    if isinstance(value, dict):
        return {k: _resolve(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ctx) for v in value]
    return value


def apply_overrides(record: dict, overrides: dict | None, ctx: dict) -> dict:
    """A copy of a realised scenario record with dotted-path ``overrides`` set (values may use the
    relative forms of :func:`_resolve`)."""
    out = copy.deepcopy(record)
    for path, value in (overrides or {}).items():
        set_dotted(out, path, _resolve(copy.deepcopy(value), ctx))
    return out


def scenario_context(env: gymnasium.Env, record: dict, reset_info: dict) -> dict:
    """Reference points for relative overrides: the ego's start arc length and its lane's centre."""
    ctx = {"start_s_m": float(reset_info.get("s_m", 0.0)), "ego_lane_d_m": 0.0}
    road = getattr(getattr(env.unwrapped, "spec_data", None), "road", None)
    if road is not None and "n_lanes" in record:
        ctx["ego_lane_d_m"] = (record["ego_lane"] + 0.5 - 0.5 * record["n_lanes"]) * float(road.lane_width_m)
    return ctx


def reset_options(seed: int, scenario: dict | None = None) -> dict:
    opts: dict[str, Any] = {"road_seed": int(seed), "noise_seed": int(seed)}
    if scenario:
        opts["scenario"] = scenario
    return opts


def rollout(
    env: gymnasium.Env,
    policy: Any,
    seed: int,
    scenario: dict | None = None,
    obs_transform: ObsTransform | None = None,
    max_steps: int | None = None,
    record_obs_every: int = 0,
    frames_every: int = 0,
    frame_size: tuple[int, int] = (128, 96),
    forced_actions: Any = None,
    on_branch: Callable[[gymnasium.Env, Trajectory, Any], None] | None = None,
    branch_step: int | None = None,
) -> Trajectory:
    """One episode of ``policy`` on ``seed`` (with ``scenario``: a full or partial record set exactly).

    ``forced_actions[t]`` replaces the policy's action for ``t < len(forced_actions)`` (replaying a
    factual history); ``on_branch(env, traj, obs)`` is called before step ``branch_step`` (to
    ``save_state``). ``obs_transform(obs, t)`` maps what the sensors gave to what the policy sees.
    """
    obs, info = env.reset(seed=int(seed), options=reset_options(seed, scenario))
    dt = 1.0 / float(env.metadata.get("render_fps", 20))
    traj = Trajectory(seed=int(seed), scenario=info.get("scenario", {}), reset_info={k: v for k, v in info.items() if k != "scenario"}, dt=dt)
    if hasattr(policy, "reset"):
        policy.reset(env)
    n_forced = 0 if forced_actions is None else len(forced_actions)
    t = 0
    while True:
        if branch_step is not None and t == branch_step and on_branch is not None:
            on_branch(env, traj, obs)
        seen = obs_transform(obs, t) if obs_transform is not None else obs
        if t < n_forced:
            action = np.asarray(forced_actions[t], dtype=np.float32)
            if hasattr(policy, "_stacked") and getattr(policy, "frame_stack", 1) > 1:
                policy._stacked(seen)  # keep a frame-stacking policy's memory in sync
        else:
            action = np.asarray(policy(seen), dtype=np.float32)
        if record_obs_every and t % record_obs_every == 0:
            traj.obs[t] = copy.deepcopy(seen)
        if frames_every and t % frames_every == 0:
            traj.frames.append(env.unwrapped.chase_camera(*frame_size))
        obs, reward, term, trunc, info = env.step(action)
        traj.actions.append(np.asarray(action, dtype=np.float32).copy())
        traj.rewards.append(float(reward))
        traj.infos.append({k: v for k, v in info.items() if k != "reward_terms"})
        t += 1
        if term or trunc:
            traj.terminated, traj.truncated = bool(term), bool(trunc)
            break
        if max_steps is not None and t >= max_steps:
            traj.horizon_cut = True
            break
    return traj


def sensor_transform(spec: dict, seed: int) -> ObsTransform:
    """Observation corruption applied between the sensors and the policy.

    ``spec`` keys: ``camera: black`` (all-zero image), ``lidar: missing`` (every beam 1.0 = "no hit"),
    ``state: zero``, ``noise: {camera: std_0_255, lidar: std, state: std}`` (Gaussian, clipped to the
    sensor's range; drawn from a generator seeded by ``seed``, so the same for every policy)."""
    rng = np.random.default_rng([int(seed), 7919])
    noise = dict(spec.get("noise") or {})

    def f(obs: dict, t: int) -> dict:
        out = dict(obs)
        for k, v in obs.items():
            mode = spec.get(k)
            if mode in ("black", "zero"):
                out[k] = np.zeros_like(v)
            elif mode == "missing":
                out[k] = np.full_like(v, missing_value(k))
            elif mode is not None:
                raise ValueError(f"sensor transform {k}: {mode!r}; valid: black/zero (images, state), missing (lidar)")
            std = float(noise.get(k, 0.0))
            if std > 0:
                x = np.asarray(out[k], np.float32) + rng.normal(0.0, std, np.shape(v)).astype(np.float32)
                if np.asarray(v).dtype == np.uint8:
                    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
                elif k == "lidar":
                    x = np.clip(x, 0.0, 1.0).astype(np.float32)
                out[k] = x
        return out

    return f
