"""SB3 callbacks: task metrics and action histograms in TensorBoard, periodic evaluation, atomic checkpoints.

TensorBoard keys written here (besides SB3's own ``rollout/``, ``train/``, ``time/``); the metric names
are the task family's ``log_tags`` (:data:`kai_drive.metrics.FAMILIES`):

* ``drive/*``  — training episodes (last 100 finished, stochastic policy). Driving: ``success_rate``,
  ``route_completion``, ``collision_rate``, ``off_road_rate``, ``lane_invasion_rate``,
  ``lane_offset_rms_m``, ``mean_speed_mps``, ``safety_cost`` (episodic sum of ``info["cost"]``). Grasp:
  ``success_rate``, ``drops``, ``table_contacts``, ``peak_contact_force_n``, ``objects_out``,
  ``max_lift_m``, ``safety_cost``.
* ``eval/*``   — the same metrics on held-out road seeds with deterministic actions, plus
  ``mean_reward``, ``mean_ep_length``, ``best_success_rate``; images ``eval/chase_strip`` and
  ``eval/camera_strip`` (a few frames of the first evaluation episode).
* ``actions/steering``, ``actions/throttle`` — histograms of the actions taken in the rollouts (the first
  two action components).
"""

from __future__ import annotations

import collections
import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from kai_drive.metrics import FAMILIES, TaskFamily, summary_line
from kai_drive.training import runs
from kai_drive.training.envs import find_vec_normalize
from kai_drive.training.evaluation import evaluate_on_roads

_NOT_TEXT = ("stdout", "log", "json", "csv")


def _family_of_venv(venv: Any) -> TaskFamily:
    return FAMILIES[venv.env_method("task_family", indices=[0])[0]]


def _episode_value(e: dict[str, Any], value: Any) -> float:
    return float(value(e)) if callable(value) else float(e.get(value, 0.0))


class EpisodeMetricsCallback(BaseCallback):
    """Logs ``drive/*`` (the task family's metrics) from the episodes finished during rollouts, and action
    histograms."""

    def __init__(self, window: int = 100, max_actions: int = 8192) -> None:
        super().__init__()
        self.episodes: collections.deque[dict[str, Any]] = collections.deque(maxlen=window)
        self._actions: list[np.ndarray] = []
        self._n_actions = 0
        self._max_actions = max_actions
        self._new = False
        self._family: TaskFamily | None = None

    def _on_training_start(self) -> None:
        self._family = _family_of_venv(self.training_env)

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", ())
        dones = self.locals.get("dones", ())
        for done, info in zip(dones, infos):
            if done and "episode_metrics" in info:
                self.episodes.append(info["episode_metrics"])
                self._new = True
        actions = self.locals.get("clipped_actions", self.locals.get("actions"))
        if actions is not None and self._n_actions < self._max_actions:
            a = np.asarray(actions, dtype=np.float32).reshape(-1, np.shape(actions)[-1])
            self._actions.append(a)
            self._n_actions += len(a)
        return True

    def _on_rollout_end(self) -> None:
        self._record(min_actions=256)

    def _on_training_end(self) -> None:
        # off-policy algorithms dump every few episodes; make sure the tail of a run reaches TensorBoard
        self._record(min_actions=1)
        self.logger.dump(self.num_timesteps)

    def _record(self, min_actions: int) -> bool:
        recorded = False
        if self._new and self.episodes:
            family = self._family or _family_of_venv(self.training_env)
            for name, value, _ in family.log_tags:
                self.logger.record(f"drive/{name}", float(np.mean([_episode_value(e, value) for e in self.episodes])))
            self._new = False
            recorded = True
        if self._n_actions >= min_actions and self._actions:
            import torch

            acts = np.concatenate(self._actions)
            self.logger.record("actions/steering", torch.from_numpy(acts[:, 0].copy()), exclude=_NOT_TEXT)
            if acts.shape[1] > 1:
                self.logger.record("actions/throttle", torch.from_numpy(acts[:, 1].copy()), exclude=_NOT_TEXT)
            self._actions, self._n_actions = [], 0
            recorded = True
        return recorded


class PeriodicEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps: deterministic episodes on fixed held-out road seeds.

    Logs ``eval/*`` (and image strips), appends to ``evaluations.json`` / ``evaluations.npz``, and keeps
    ``best_model.zip`` (+ ``best_model_vecnormalize.pkl``): the best **success rate**, ties broken by
    the mean return. Optionally stops training once ``stop_success_rate`` is reached.
    """

    def __init__(
        self,
        eval_env: Any,
        run_dir: Path,
        eval_freq: int,
        road_seeds: Sequence[int],
        images: bool = True,
        stop_success_rate: float | None = None,
        stop_min_timesteps: int = 0,
        start_timesteps: int = 0,
        printer: Callable[[str], None] | None = print,
    ) -> None:
        super().__init__()
        self.eval_env = eval_env
        self.run_dir = Path(run_dir)
        self.eval_freq = int(eval_freq)
        self.road_seeds = list(road_seeds)
        self.images = images
        self.stop_success_rate = stop_success_rate
        self.stop_min_timesteps = stop_min_timesteps
        self.start_timesteps = start_timesteps
        self.printer = printer
        self.history: list[dict[str, Any]] = runs.read_json(runs.RunFolder(self.run_dir).file(runs.RunFolder.EVALUATIONS), default=[])
        self.best_key = max(
            ((h["success_rate"], h["mean_return"]) for h in self.history if h.get("saved_best")),
            default=(-1.0, -np.inf),
        )
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = self.num_timesteps + self.eval_freq

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.num_timesteps < self._next:
            return True
        self._next = self.num_timesteps + self.eval_freq
        if self.num_timesteps < self.start_timesteps:
            return True
        return self.run_eval()

    def run_eval(self) -> bool:
        train_vn, eval_vn = find_vec_normalize(self.training_env), find_vec_normalize(self.eval_env)
        if train_vn is not None and eval_vn is not None:
            if train_vn.norm_obs:  # without norm_obs SB3 keeps no obs_rms
                eval_vn.obs_rms = copy.deepcopy(train_vn.obs_rms)
            eval_vn.ret_rms = copy.deepcopy(train_vn.ret_rms)
        family = _family_of_venv(self.eval_env)
        res = evaluate_on_roads(self.model, self.eval_env, self.road_seeds, frames_every=30 if self.images else 0)
        frames = res.pop("_frames")
        per_episode = res.pop("per_episode")
        for name, _, summary_key in family.log_tags:
            self.logger.record(f"eval/{name}", res[summary_key])
        self.logger.record("eval/mean_reward", res["mean_return"])
        self.logger.record("eval/mean_ep_length", res["mean_length"])
        key = (res["success_rate"], res["mean_return"])
        improved = key > self.best_key
        if improved:
            self.best_key = key
            folder = runs.RunFolder(self.run_dir)
            runs.save_model(self.model, folder.model_file("best"))
            vn = find_vec_normalize(self.training_env)
            if vn is not None:
                runs.save_vecnormalize(vn, folder.stats_file("best"))
        self.logger.record("eval/best_success_rate", self.best_key[0])
        if self.images and frames["chase"]:
            from stable_baselines3.common.logger import Image

            self.logger.record("eval/chase_strip", Image(_strip(frames["chase"]), "HWC"), exclude=_NOT_TEXT)
            if frames["camera"]:
                cams = [_upscale(f, frames["chase"][0].shape[0]) for f in frames["camera"]]
                self.logger.record("eval/camera_strip", Image(_strip(cams), "HWC"), exclude=_NOT_TEXT)
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        entry = {"timesteps": int(self.num_timesteps), "time": time.time(), "saved_best": improved, **res}
        entry["returns"] = [e.get("return", 0.0) for e in per_episode]
        entry["lengths"] = [e.get("length", 0) for e in per_episode]
        entry["successes"] = [e.get("success", 0.0) for e in per_episode]
        entry["road_seeds"] = [e.get("road_seed", -1) for e in per_episode]
        self.history.append(entry)
        folder = runs.RunFolder(self.run_dir)
        runs.write_json(folder.file(folder.EVALUATIONS), self.history)
        _write_npz(folder.file(folder.EVALUATIONS_NPZ), self.history)
        if self.printer is not None:
            self.printer(
                f"eval @ {self.num_timesteps:,} steps: success {res['successes']}/{res['episodes']}"
                f" ({100 * res['success_rate']:.0f} %), {summary_line(res, family)}"
                f"{'  [new best]' if improved else ''}  ({res['wall_time_s']:.1f} s)"
            )
        if (
            self.stop_success_rate is not None
            and res["success_rate"] >= self.stop_success_rate
            and self.num_timesteps >= self.stop_min_timesteps
        ):
            if self.printer is not None:
                self.printer(
                    f"stopping: evaluation success rate {100 * res['success_rate']:.0f} % >= "
                    f"{100 * self.stop_success_rate:.0f} % (eval.stop_success_rate)"
                )
            return False
        return True


def _write_npz(path: Path, history: list[dict[str, Any]]) -> None:
    """rl-baselines3-zoo's evaluations.npz layout (timesteps, results, ep_lengths, successes)."""
    n = min(len(h["returns"]) for h in history)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            timesteps=np.asarray([h["timesteps"] for h in history]),
            results=np.asarray([h["returns"][:n] for h in history]),
            ep_lengths=np.asarray([h["lengths"][:n] for h in history]),
            successes=np.asarray([h["successes"][:n] for h in history]),
        )
    tmp.replace(path)


def _strip(frames: list[np.ndarray]) -> np.ndarray:
    """Frames side by side with a 2-pixel white gap (H, W, 3 uint8)."""
    h = frames[0].shape[0]
    gap = np.full((h, 2, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for f in frames:
        parts += [np.asarray(f, np.uint8)[:, :, :3], gap]
    return np.concatenate(parts[:-1], axis=1)


def _upscale(img: np.ndarray, height: int) -> np.ndarray:
    k = max(1, height // img.shape[0])
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


class RunCheckpointCallback(BaseCallback):
    """Every ``save_freq`` env steps: ``checkpoints/model_<steps>_steps.zip`` (+ VecNormalize stats and,
    for off-policy algorithms, the latest replay buffer), each written atomically."""

    def __init__(self, run_dir: Path, save_freq: int, save_replay_buffer: bool = False) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.save_freq = int(save_freq)
        self.save_replay_buffer = save_replay_buffer
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = self.num_timesteps + self.save_freq

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps >= self._next:
            self._next = self.num_timesteps + self.save_freq
            self.save()
        return True

    def save(self) -> Path:
        return runs.save_checkpoint(self.model, self.run_dir, self.save_replay_buffer)
