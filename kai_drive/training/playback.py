"""Watch a trained agent drive (the body of ``python -m kai_drive.play``): find a run's model, VecNormalize
stats and config (:class:`~kai_drive.training.runs.RunFolder`), build the env it was tested on, and drive
episodes in the PyBullet GUI or into a video of the chase camera (mp4 with ``imageio-ffmpeg``, else GIF).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio
import numpy as np
from stable_baselines3.common.vec_env import VecNormalize

from kai_drive.catalog import resolve_env
from kai_drive.metrics import family_of
from kai_drive.perception.sb3 import attach_encoder
from kai_drive.perception.weights import warn_renderer_mismatch
from kai_drive.training.algos import ALGOS, algorithm
from kai_drive.training.envs import TEST_ROAD_SEED_BASE, make_vec_env
from kai_drive.training.recipe import Normalisation, env_config_for, parse_set
from kai_drive.training.runs import RunFolder, run_renderer, venv_renderer


@dataclass
class PlayFiles:
    """What ``play`` drives: the model, its VecNormalize stats (or None), the run's config.yaml with
    ``env_config`` set to the chosen role's (or None: a bare model) and the folder videos go to."""

    model: Path
    stats: Path | None
    config: dict | None
    out_dir: Path


def algo_of(model_path: Path) -> str:
    """The SB3 algorithm that saved ``model_path`` (read from the zip's ``data`` JSON)."""
    with zipfile.ZipFile(model_path) as zf:
        data = json.loads(zf.read("data").decode())
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for algo in ALGOS:
        if f".{algo}." in module or module.endswith(f".{algo}"):
            return algo
    if "common.policies" in module:  # ActorCriticPolicy: PPO (or A2C, loadable as PPO for inference)
        return "ppo"
    raise ValueError(f"{model_path}: cannot tell which algorithm saved it (policy module {module!r})")


def with_role(config: dict, role: str) -> dict:
    """``config`` with ``env_config`` (top level) = the recipe's env config for ``role`` (dotted keys)."""
    out = dict(config)
    out["env_config"] = env_config_for(config.get("recipe") or {}, role)
    out["env_config_role"] = role
    return out


def find_run_files(run: Path | None = None, which: str = "best", model: Path | None = None,
                   vecnormalize: Path | None = None, role: str = "test") -> PlayFiles:
    """The files of ``--run RUN --which best|final|latest`` or of ``--model FILE``.

    ``config`` is the run's config.yaml with ``env_config`` set to the env config of ``role`` (default
    ``test``: ``env_config`` + ``test_env_config``; runs from before ``test_env_config`` get their final
    evaluation's, ``eval_env_config``)."""
    if run is None:
        return _model_files(model, vecnormalize, role)
    folder = RunFolder(run)
    if not folder.is_run():
        raise ValueError(f"--run {run}: no config.yaml (not a kai_drive.train run folder)")
    config = with_role(folder.config(), role)
    if which == "latest":
        ckpt, skipped = folder.latest_readable_checkpoint()
        for steps, path, why in skipped:
            print(f"warning: {path} is unreadable ({why}); skipping it", file=sys.stderr)
        if ckpt is None:
            raise ValueError(f"--run {run}: no readable checkpoint in {folder.checkpoints_dir}")
        model_file, stats = ckpt[1], ckpt[2]
    else:
        model_file = folder.model_file(which)
        if which == "best" and not model_file.is_file():
            print(f"{model_file.name} not found (no evaluation ran); using final_model.zip")
            model_file = folder.model_file("final")
        if not model_file.is_file():
            raise ValueError(f"--run {run}: {model_file.name} not found (is the training finished?)")
        stats = folder.stats_beside(model_file)
    stats = vecnormalize or (stats if stats and stats.is_file() else None)
    return PlayFiles(model_file, stats, config, folder.file(RunFolder.VIDEOS))


def _model_files(model: Path, vecnormalize: Path | None, role: str) -> PlayFiles:
    if not model.is_file():
        raise ValueError(f"--model {model}: file not found")
    stats = vecnormalize
    if stats is None:
        cand = RunFolder.stats_beside(model)
        stats = cand if cand.is_file() else None
    folder = RunFolder.of_model(model)
    config = with_role(folder.config(), role) if folder.is_run() else None
    return PlayFiles(model, stats, config, folder.file(RunFolder.VIDEOS))


def resolve_play_env(files: PlayFiles, env: str | None, sets: list[str]) -> tuple[str, dict, str]:
    """``(env id, env config, algo)``: the run's (role's) env config with the ``--set`` overrides on top."""
    config = files.config or {}
    name = env or config.get("env_id")
    if not name:
        raise ValueError("--env is required when the model has no config.yaml beside it")
    env_id, _ = resolve_env(name)
    env_config = dict(config.get("env_config", {}))
    if sets:
        env_config.update({k: v for k, v in parse_set([f"env_config.{s}" for s in sets])["env_config"].items()})
    return env_id, env_config, config.get("algo") or algo_of(files.model)


def make_play_env(files: PlayFiles, env_id: str, env_config: dict, gui: bool) -> Any:
    """One env (GUI or headless) with the run's VecNormalize stats applied (not updated); warns when its
    renderer differs from the run's and the policy sees images."""
    recipe = (files.config or {}).get("recipe", {})
    venv = make_vec_env(env_id, env_config, 1, "dummy", "eval", int(recipe.get("frame_stack", 1)),
                        render_mode="human" if gui else None)
    if files.stats is not None and not recipe.get("encoder"):  # encoder runs never normalise observations
        venv = VecNormalize.load(str(files.stats), venv)
        venv.training, venv.norm_reward = False, False
    elif Normalisation(**recipe.get("normalisation", {})).enabled if recipe else False:
        print("warning: the run used VecNormalize but no stats were found; the agent will see raw observations")
    if files.config is not None:  # the policy saw images from one renderer: say so if this env uses another
        renderer, sees_pixels = venv_renderer(venv)
        if sees_pixels:
            warn_renderer_mismatch(run_renderer(files.config), renderer, f"the policy {files.model}")
    return venv


def control_rate(venv: Any) -> int:
    """The env's control rate (steps per second)."""
    return venv.get_attr("metadata")[0].get("render_fps", 20)


def load_agent(files: PlayFiles, algo: str, venv: Any) -> Any:
    """The SB3 model (on CPU); a run trained on frozen embeddings gets its encoder back in front."""
    model = algorithm(algo).load(str(files.model), device="cpu")
    encoder = (files.config or {}).get("recipe", {}).get("encoder")
    if encoder:  # trained on frozen embeddings: encode this (raw) env's observations
        model = attach_encoder(model, venv.observation_space, encoder.get("pretrained", "lane-keep"))
    return model


def video_path(out: Path | None, files: PlayFiles) -> Path:
    """``--out`` or ``<run>/videos/play_<model>_<time>.mp4``; a GIF when imageio-ffmpeg is missing."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = files.out_dir / f"play_{files.model.stem}_{stamp}.mp4"
    if out.suffix not in (".mp4", ".gif"):
        raise ValueError(f"--out {out}: use a .mp4 or .gif file name")
    if out.suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        out = out.with_suffix(".gif")
        print("imageio-ffmpeg is not installed, so no mp4: writing a GIF instead (pip install imageio-ffmpeg for mp4)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def open_writer(out: Path, fps: int) -> Any:
    """An imageio writer for ``out`` (GIFs get every second frame, at half the rate)."""
    if out.suffix == ".gif":
        return imageio.get_writer(out, mode="I", duration=1000.0 / max(1, fps // 2), loop=0)
    return imageio.get_writer(out, fps=fps, macro_block_size=1)


def drive(venv: Any, model: Any, seeds: list[int], deterministic: bool, gui: bool, writer: Any = None,
          out: Path | None = None, size: tuple[int, int] = (320, 240)) -> list[dict]:
    """Drive one episode per road seed, printing each; returns the episodes' metrics (Ctrl-C stops early)."""
    control_hz = control_rate(venv)
    family = family_of(venv.env_method("task_family")[0])
    venv.env_method("queue_road_seeds", seeds)
    obs = venv.reset()
    results: list[dict] = []
    frame_i = 0
    try:
        for k, road in enumerate(seeds):
            done = False
            while not done:
                if writer is not None:
                    if out.suffix == ".mp4" or frame_i % 2 == 0:
                        writer.append_data(np.asarray(venv.env_method("chase_frame", *size)[0]))
                    frame_i += 1
                action, _ = model.predict(obs, deterministic=deterministic)
                t0 = time.perf_counter()
                obs, _, dones, infos = venv.step(action)
                done = bool(dones[0])
                if gui:
                    time.sleep(max(0.0, 1.0 / control_hz - (time.perf_counter() - t0)))
            m = infos[0].get("episode_metrics", {})
            results.append(m)
            print(f"episode {k + 1}/{len(seeds)} (road {road}): return {m.get('return', float('nan')):.2f}, "
                  f"success {'yes' if m.get('success') else 'no'}, {family.episode_line(m)}")
    except KeyboardInterrupt:
        print("interrupted")
    return results


def road_seeds(first: int | None, episodes: int) -> list[int]:
    """``episodes`` road seeds from ``first`` (default: the held-out test roads of kai_drive.train)."""
    first = TEST_ROAD_SEED_BASE if first is None else first
    return [first + i for i in range(episodes)]
