"""Pretraining data: frames of a perturbed scripted driver (``data.npz``, randomised sensors, training roads)
and of held-out probe roads (``probe_data.npz``, clean sensors), with privileged labels for the probes.

The driver is a privileged P-controller (:func:`kai_drive.snapshot.lane_follower`'s law) with perturbations --
a wandering lateral set-point, steering noise and steering bursts, a random target speed per episode -- so the
frames cover off-centre and misaligned states. Domain randomisation is done through env config overrides drawn
per collection env (camera/lidar noise, camera pitch...); colour and light randomisation do not exist in the
env yet. Data files are written atomically; a damaged one is an error naming it (:class:`PretrainError`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gymnasium
import numpy as np
from tqdm import tqdm

import kai_drive  # noqa: F401  (registers the envs)
from kai_drive.catalog import resolve_env
from kai_drive.perception.pretrain_recipe import CollectRecipe, PretrainRecipe
from kai_drive.files import atomic as atomic_write
from kai_drive.perception.weights import LEGACY_RENDERER

LOG = logging.getLogger("kai_drive.pretrain")

#: road seeds of the held-out probe roads (never drawn by collection, which uses [0, 2**30))
PROBE_ROAD_SEED_BASE = 2**30 + 2**29 + 2**28
LABELS = ("lateral_offset_m", "heading_error_rad", "edge_distance_m", "speed_mps", "lead_gap_m")
#: the labels probed by default (lead_gap_m has its own probe: NaN without a lead)
PROBE_LABELS = ("lateral_offset_m", "heading_error_rad", "edge_distance_m")


class PretrainError(Exception):
    """A pretraining run folder's file is unreadable or does not match; ``python -m kai_drive.pretrain`` exits
    with the message (status 1)."""


class PerturbedDriver:
    """Privileged P-controller tracking a wandering lateral set-point, with noise and steering bursts.

    ``env`` (with ``c.longitudinal == "idm"``): the throttle comes from the privileged IDM of
    :class:`kai_drive.experts.driving.IDMPurePursuit` toward the episode's target speed behind the nearest
    actor ahead (lead car, traffic, a crossing pedestrian), so the driver brakes for traffic."""

    def __init__(self, c: CollectRecipe, rng: np.random.Generator, env=None) -> None:
        self.c, self.rng = c, rng
        self.expert = None
        if c.longitudinal == "idm":
            if env is None:
                raise ValueError("collect.longitudinal: idm needs the env (the IDM reads the true scene)")
            from kai_drive.experts.driving import IDMPurePursuit

            self.expert = IDMPurePursuit(env)
        self.reset()

    def reset(self) -> None:
        c, rng = self.c, self.rng
        self.speed = float(rng.uniform(*c.speed_mps))
        self.setpoint, self.next_setpoint, self.burst_left, self.burst = 0.0, 0, 0, 0.0
        if self.expert is not None:  # IDM's desired speed = speed_frac x the task's target speed
            self.expert.speed_frac = self.speed / max(float(self.expert.env.task.t.target_speed_mps), 1e-6)

    def act(self, info: dict) -> np.ndarray:
        c, rng = self.c, self.rng
        self.next_setpoint -= 1
        if self.next_setpoint <= 0:
            self.setpoint = float(rng.uniform(-c.target_offset_m, c.target_offset_m))
            self.next_setpoint = int(rng.integers(c.setpoint_steps[0], c.setpoint_steps[1] + 1))
        if self.burst_left <= 0 and rng.random() < c.burst_prob:
            self.burst_left = int(rng.integers(c.burst_steps[0], c.burst_steps[1] + 1))
            self.burst = float(rng.uniform(-c.burst_steer, c.burst_steer))
        err = info.get("lateral_offset_m", 0.0) - self.setpoint
        steer = -0.6 * err - 1.5 * info.get("heading_error_rad", 0.0) + rng.normal(0.0, c.steer_noise)
        if self.burst_left > 0:
            steer += self.burst
            self.burst_left -= 1
        if self.expert is not None:
            throttle = float(self.expert()[1])
        else:
            throttle = float(np.clip(0.5 * (self.speed - info.get("speed_mps", 0.0)), -1.0, 1.0))
        return np.clip(np.array([steer, throttle], dtype=np.float32), -1.0, 1.0)


def _edge_distance(task, lateral_offset_m: float) -> float:
    """Distance (m) from the car's centre to the nearer edge body's inner face."""
    d_road = lateral_offset_m + task.lane_offset
    return float(task.layout.edge_offset_m - abs(d_road))


def lead_gap(info: dict) -> float:
    """The lead-distance label: ``info["gap_m"]`` (bumper to bumper, m) when a vehicle is the nearest actor
    ahead, else NaN (no lead: lane-keep; a pedestrian or obstacle ahead; nothing in range)."""
    gap = float(info.get("gap_m", np.inf))
    if not np.isfinite(gap) or info.get("nearest_actor", "vehicle") != "vehicle":
        return float("nan")
    return gap


def episode_plan(recipe: PretrainRecipe, road_seeds: list[int]) -> list[str]:
    """The env alias of each episode: the recipe's envs in turn (round robin), so they share the episodes
    evenly (counts differ by at most one)."""
    aliases = recipe.env_aliases()
    return [aliases[i % len(aliases)] for i in range(len(road_seeds))]


def _drive_episode(env, driver: PerturbedDriver, obs: dict, info: dict, buf: dict[str, list], max_steps: int,
                   tags: dict[str, int]) -> None:
    """One episode from a reset's ``(obs, info)``: appends each frame's observation, labels, ``step`` and ``tags``
    (episode, env_index) to ``buf``."""
    task = env.unwrapped.task
    driver.reset()
    for step in range(max_steps):
        for k, v in obs.items():
            buf.setdefault(k, []).append(v)
        lat = float(info["lateral_offset_m"])
        labels = {"lateral_offset_m": lat, "heading_error_rad": float(info["heading_error_rad"]),
                  "edge_distance_m": _edge_distance(task, lat), "speed_mps": float(info["speed_mps"]),
                  "lead_gap_m": lead_gap(info)}
        for k, v in {**labels, **tags, "step": step}.items():
            buf.setdefault(k, []).append(v)
        obs, _, term, trunc, info = env.step(driver.act(info))
        if term or trunc:
            break


def collect(recipe: PretrainRecipe, episodes: int, road_seeds: list[int], randomize: bool,
            seed: int, progress: bool = True, scenario: dict | None = None,
            max_steps: int | None = None) -> dict[str, np.ndarray]:
    """Drive ``episodes`` episodes spread over the recipe's envs (:func:`episode_plan`); returns arrays:
    observation keys, labels (:data:`LABELS`; ``lead_gap_m`` NaN without a lead), ``episode``, ``step``,
    ``env_index`` (into ``envs``), ``envs`` (the aliases) and ``renderer`` (a 0-d string array: the renderer
    that made the images, "tiny", "egl" or "opengl").

    Each env gets :meth:`PretrainRecipe.overrides_for` its alias (plus, with ``randomize``, the recipe's
    ``randomize`` draws per randomised config). ``scenario``: factors set exactly at every reset (a shift
    condition replayed on the same roads; nested dict as ``reset(options={"scenario": ...})`` takes)."""
    c = recipe.collect
    aliases = recipe.env_aliases()
    plan = episode_plan(recipe, road_seeds[:episodes])
    max_steps = max_steps or c.max_steps
    rng = np.random.default_rng(seed)
    buf: dict[str, list] = {}
    renderers: set[str] = set()
    bar = tqdm(total=episodes, desc="collect" + (" (randomised)" if randomize else " (probe roads)"),
               disable=not progress, unit="ep")
    for ei, alias in enumerate(aliases):
        mine = np.array([i for i, a in enumerate(plan) if a == alias], dtype=int)
        if len(mine) == 0:
            continue
        env_id = resolve_env(alias)[0]
        n_cfg = min(c.randomized_envs, len(mine)) if randomize else 1
        for idxs in np.array_split(mine, n_cfg):
            cfg = recipe.overrides_for(alias)
            if randomize:
                for key, (lo, hi) in c.randomize.items():
                    cfg[key] = float(rng.uniform(lo, hi))
            env = gymnasium.make(env_id, config=cfg)
            renderers.add(str(env.unwrapped.renderer))
            driver = PerturbedDriver(c, rng, env)
            for ep in idxs:
                options = {"road_seed": int(road_seeds[ep])}
                if scenario:
                    options["scenario"] = scenario
                obs, info = env.reset(seed=int(rng.integers(2**31 - 1)), options=options)
                _drive_episode(env, driver, obs, info, buf, max_steps, {"episode": int(ep), "env_index": ei})
                bar.update(1)
            env.close()
    bar.close()
    out = {}
    for k, v in buf.items():
        arr = np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v)
        out[k] = arr.astype(np.float32) if k in LABELS else arr
    out["renderer"] = np.asarray("+".join(sorted(renderers)))
    out["envs"] = np.asarray(aliases)
    return out


def savez(path: Path, data: dict) -> None:
    """``np.savez`` atomically: a crash never leaves a truncated data file that a resume would trust."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
            np.savez(fh, **data)

    atomic_write(path, write)


def loadz(path: Path) -> dict:
    """A data file of this folder; a damaged one is an error naming it and the fix."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # truncated zip, bad CRC, not an npz
        raise PretrainError(
            f"error: {path} is unreadable ({type(exc).__name__}: {exc}); delete it and run again to collect it anew"
        ) from None


def _meta(d: dict) -> tuple[str, list[str] | None]:
    """Pops the non-frame entries of a data dict: ``(renderer, envs)`` (files that predate the keys: the
    legacy renderer, None)."""
    renderer = str(d.pop("renderer", LEGACY_RENDERER))
    envs = d.pop("envs", None)
    return renderer, (None if envs is None else [str(e) for e in np.atleast_1d(envs)])


def probe_road_seeds(n: int) -> list[int]:
    return [PROBE_ROAD_SEED_BASE + i for i in range(n)]


def load_or_collect(recipe, out: Path, progress: bool = True) -> tuple[dict, dict, str]:
    """``(data, probe, renderer)``: training frames (randomised sensors, training roads), probe frames (clean,
    held-out roads) and the renderer that made the training images ("tiny" for files that predate the key).
    ``data`` and ``probe`` hold ``envs`` no longer (see :func:`collect`); ``data["env_index"]`` indexes
    ``recipe.env_aliases()`` (absent in files that predate multi-env collection: all frames are ``recipe.env``)."""
    c = recipe.collect
    data_path, probe_path = out / "data.npz", out / "probe_data.npz"
    if data_path.is_file():
        data = loadz(data_path)
    else:
        rng = np.random.default_rng(recipe.seed)
        seeds = rng.integers(0, 2**30, c.episodes).tolist()
        t0 = time.time()
        data = collect(recipe, c.episodes, seeds, randomize=True, seed=recipe.seed, progress=progress)
        LOG.info("collected %d frames in %.0f s", len(data["episode"]), time.time() - t0)
        savez(data_path, data)
    if probe_path.is_file():
        probe = loadz(probe_path)
    else:
        probe = collect(recipe, c.probe_episodes, probe_road_seeds(c.probe_episodes), randomize=False,
                        seed=recipe.seed + 1, progress=progress, max_steps=c.probe_max_steps)
        savez(probe_path, probe)
    renderer, envs = _meta(data)
    _meta(probe)
    if envs is not None and envs != recipe.env_aliases():
        raise PretrainError(f"{data_path} was collected from envs {envs}, the recipe names {recipe.env_aliases()}; "
                            "use another --out")
    return data, probe, renderer


def shift_conditions(recipe) -> dict[str, dict]:
    """``{condition: nested scenario dict}`` of the recipe's ``probe.shift_conditions`` (from the suite
    ``probe.shift_suite``); a condition without a ``scenario:`` (an observation transform, an attack) is an error."""
    if not recipe.probe.shift_conditions:
        return {}
    from kai_drive.config import dotted_to_nested
    from kai_drive.evaluation.suite import load_suite

    conds = load_suite(recipe.probe.shift_suite)["robustness"]["conditions"]
    out = {}
    for name in recipe.probe.shift_conditions:
        if name not in conds:
            raise PretrainError(f"probe.shift_conditions: {name!r} is not a condition of suite "
                                f"{recipe.probe.shift_suite!r} ({sorted(conds)})")
        scen = conds[name].get("scenario")
        if not scen:
            raise PretrainError(f"probe.shift_conditions: {name!r} sets no scenario factor (it is a transform or an "
                                "attack); only scenario conditions can be replayed on the probe roads")
        out[name] = dotted_to_nested(scen)
    return out


def load_or_collect_shifts(recipe, out: Path, progress: bool = True) -> dict[str, dict]:
    """``{condition: probe frames}``: the held-out probe roads again, same seeds and same driver draws as
    ``probe_data.npz``, with each shift condition's scenario factors set (``probe_shift_<name>.npz``)."""
    c = recipe.collect
    res = {}
    for name, scen in shift_conditions(recipe).items():
        path = out / f"probe_shift_{name}.npz"
        if path.is_file():
            d = loadz(path)
        else:
            d = collect(recipe, c.probe_episodes, probe_road_seeds(c.probe_episodes), randomize=False,
                        seed=recipe.seed + 1, progress=progress, scenario=scen, max_steps=c.probe_max_steps)
            savez(path, d)
        _meta(d)
        res[name] = d
    return res
