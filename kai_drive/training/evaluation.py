"""Deterministic evaluation of a policy on given road seeds, and its summary (:func:`kai_drive.metrics.summarize_episodes`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from kai_drive.metrics import summarize_episodes


def run_episodes(
    model: Any,
    venv: Any,
    road_seeds: Sequence[int],
    deterministic: bool = True,
    frames_every: int = 0,
    max_frames: int = 8,
    chase_size: tuple[int, int] = (160, 120),
) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray]]]:
    """Drive one episode per road seed; returns ``(per-episode metrics, frames)``.

    ``venv`` is an eval-split VecEnv (see :func:`kai_drive.training.envs.make_vec_env`), possibly wrapped in
    ``VecNormalize`` (``training=False``). Env ``i`` drives ``road_seeds[i::n_envs]``, so the result does
    not depend on timing. With ``frames_every > 0`` the first episode of env 0 is filmed every
    ``frames_every`` steps: ``frames["chase"]`` (chase camera) and ``frames["camera"]`` (agent camera).
    """
    n = venv.num_envs
    quotas = [list(road_seeds[i::n]) for i in range(n)]
    for i, seeds in enumerate(quotas):
        venv.env_method("queue_road_seeds", seeds, indices=[i])
    obs = venv.reset()
    results: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    frames: dict[str, list[np.ndarray]] = {"chase": [], "camera": []}
    filming = frames_every > 0 and len(quotas[0]) > 0
    step = 0
    states = None
    episode_starts = np.ones((n,), dtype=bool)
    while any(len(results[i]) < len(quotas[i]) for i in range(n)):
        if filming and step % frames_every == 0 and len(frames["chase"]) < max_frames:
            _grab(venv, frames, chase_size)
        action, states = model.predict(obs, state=states, episode_start=episode_starts, deterministic=deterministic)
        obs, _, dones, infos = venv.step(action)
        episode_starts = dones
        step += 1
        for i, (done, info) in enumerate(zip(dones, infos)):
            if done and len(results[i]) < len(quotas[i]):
                m = dict(info.get("episode_metrics", {}))
                if "episode" in info:
                    m.setdefault("return", float(info["episode"]["r"]))
                results[i].append(m)
                if i == 0 and filming:
                    filming = False
    # order as road_seeds
    ordered: list[dict[str, Any]] = []
    for k in range(len(road_seeds)):
        ordered.append(results[k % n][k // n])
    return ordered, frames


def _grab(venv: Any, frames: dict[str, list[np.ndarray]], chase_size: tuple[int, int]) -> None:
    w, h = chase_size
    frames["chase"].append(np.asarray(venv.env_method("chase_frame", w, h, indices=[0])[0]))
    cam = venv.env_method("last_camera", indices=[0])[0]
    if cam is not None:
        frames["camera"].append(np.asarray(cam))


def evaluate_on_roads(model: Any, venv: Any, road_seeds: Sequence[int], **kwargs: Any) -> dict[str, Any]:
    """Run one deterministic episode per road seed and summarise them for the env's task family
    (:func:`kai_drive.metrics.summarize_episodes`); adds ``wall_time_s``, the per-episode list
    and ``_frames``."""
    t0 = time.perf_counter()
    episodes, frames = run_episodes(model, venv, road_seeds, **kwargs)
    family = venv.env_method("task_family", indices=[0])[0]
    out = summarize_episodes(episodes, family)
    out["wall_time_s"] = time.perf_counter() - t0
    out["per_episode"] = episodes
    out["_frames"] = frames
    return out
