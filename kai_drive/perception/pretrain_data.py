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
LABELS = ("lateral_offset_m", "heading_error_rad", "edge_distance_m", "speed_mps")


class PretrainError(Exception):
    """A pretraining run folder's file is unreadable or does not match; ``python -m kai_drive.pretrain`` exits
    with the message (status 1)."""


class PerturbedDriver:
    """Privileged P-controller tracking a wandering lateral set-point, with noise and steering bursts."""

    def __init__(self, c: CollectRecipe, rng: np.random.Generator) -> None:
        self.c, self.rng = c, rng
        self.reset()

    def reset(self) -> None:
        c, rng = self.c, self.rng
        self.speed = float(rng.uniform(*c.speed_mps))
        self.setpoint, self.next_setpoint, self.burst_left, self.burst = 0.0, 0, 0, 0.0

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
        throttle = float(np.clip(0.5 * (self.speed - info.get("speed_mps", 0.0)), -1.0, 1.0))
        return np.clip(np.array([steer, throttle], dtype=np.float32), -1.0, 1.0)


def _edge_distance(task, lateral_offset_m: float) -> float:
    """Distance (m) from the car's centre to the nearer edge body's inner face."""
    d_road = lateral_offset_m + task.lane_offset
    return float(task.layout.edge_offset_m - abs(d_road))


def collect(recipe: PretrainRecipe, episodes: int, road_seeds: list[int], randomize: bool,
            seed: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Drive ``episodes`` episodes; returns arrays: observation keys, labels, ``episode``, ``step``, and
    ``renderer`` (a 0-d string array: the renderer that made the images, "tiny", "egl" or "opengl")."""
    c = recipe.collect
    env_id, _ = resolve_env(recipe.env)
    rng = np.random.default_rng(seed)
    n_cfg = min(c.randomized_envs, episodes) if randomize else 1
    per_cfg = np.array_split(np.arange(episodes), n_cfg)
    buf: dict[str, list] = {}
    renderers: set[str] = set()
    bar = tqdm(total=episodes, desc="collect" + (" (randomised)" if randomize else " (probe roads)"),
               disable=not progress, unit="ep")
    for idxs in per_cfg:
        cfg = dict(c.env_overrides)
        if randomize:
            for key, (lo, hi) in c.randomize.items():
                cfg[key] = float(rng.uniform(lo, hi))
        env = gymnasium.make(env_id, config=cfg)
        renderers.add(str(env.unwrapped.renderer))
        task = env.unwrapped.task
        driver = PerturbedDriver(c, rng)
        for ep in idxs:
            obs, info = env.reset(seed=int(rng.integers(2**31 - 1)), options={"road_seed": int(road_seeds[ep])})
            driver.reset()
            for step in range(c.max_steps):
                for k, v in obs.items():
                    buf.setdefault(k, []).append(v)
                lat = float(info["lateral_offset_m"])
                labels = {"lateral_offset_m": lat, "heading_error_rad": float(info["heading_error_rad"]),
                          "edge_distance_m": _edge_distance(task, lat), "speed_mps": float(info["speed_mps"])}
                for k, v in labels.items():
                    buf.setdefault(k, []).append(v)
                buf.setdefault("episode", []).append(int(ep))
                buf.setdefault("step", []).append(step)
                obs, _, term, trunc, info = env.step(driver.act(info))
                if term or trunc:
                    break
            bar.update(1)
        env.close()
    bar.close()
    out = {}
    for k, v in buf.items():
        arr = np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v)
        out[k] = arr.astype(np.float32) if k in LABELS else arr
    out["renderer"] = np.asarray("+".join(sorted(renderers)))
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


def load_or_collect(recipe, out: Path, progress: bool = True) -> tuple[dict, dict, str]:
    """``(data, probe, renderer)``: training frames (randomised sensors, training roads), probe frames (clean,
    held-out roads) and the renderer that made the training images ("tiny" for files that predate the key)."""
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
        seeds = [PROBE_ROAD_SEED_BASE + i for i in range(c.probe_episodes)]
        probe = collect(recipe, c.probe_episodes, seeds, randomize=False, seed=recipe.seed + 1, progress=progress)
        savez(probe_path, probe)
    renderer = str(data.pop("renderer", LEGACY_RENDERER))
    probe.pop("renderer", None)
    return data, probe, renderer
