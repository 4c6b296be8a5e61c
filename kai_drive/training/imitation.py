"""Imitation before RL: behaviour cloning with DAgger from a privileged scripted expert.

A recipe's ``imitation:`` section (see :class:`kai_drive.training.recipe.ImitationSettings`) makes
``python -m kai_drive.train`` warm-start the agent's policy before the RL algorithm takes over:

1. **Demonstrations.** ``episodes`` episodes driven by the scripted expert (optionally with Gaussian
   action noise, DART-style, so the data covers recoveries). The expert reads privileged simulator state
   (object poses, the route); the *student* only ever sees the env's observations (camera, depth,
   lidar, state), so this is teacher-student distillation, as in Chen et al. 2019 ("Learning by
   Cheating") or the privileged-expert grasping literature.
2. **Behaviour cloning.** The policy's mean action is regressed onto the expert's action (MSE), with
   the same random-shift augmentation of images as DrQ, for ``epochs`` passes over the data set.
3. **DAgger** (Ross et al. 2011), ``dagger_rounds`` times: the *student* drives ``dagger_episodes``
   episodes; the expert labels every state the student visits; the aggregate data set is refitted.
   This corrects the compounding error of pure behaviour cloning.
4. The policy's exploration noise is reset to ``log_std`` and RL (PPO) fine-tunes from there.

Labels come from :class:`ExpertLabels`, a gymnasium wrapper that runs the expert *inside* each env
(subprocess workers included) and puts ``info["expert_action"]`` and ``info["expert_acting"]`` (whether
the next action has any effect, e.g. only while the assisted grasp descends) in every reset and step
info. Only acting steps are kept. Experts are named in :data:`EXPERTS` (a whitelist, like every class a
recipe names).

Why not the ``imitation`` package (HumanCompatibleAI): its releases pin gymnasium ~0.29 and
stable-baselines3 ~2.2 (we run gymnasium 1.x / SB3 2.9), and its DAgger expects an expert that acts on
observations, while ours act on privileged simulator state inside the env.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np
import torch

from kai_drive.perception.pretraining import random_shift
from kai_drive.perception.sb3 import ScaledLRAdam
from kai_drive.training.algos import EXPERTS

__all__ = ["EXPERTS", "ExpertLabels", "make_expert", "collect", "fit_bc", "run_imitation"]

def make_expert(name: str, env: gymnasium.Env) -> Any:
    if name not in EXPERTS:
        raise ValueError(f"unknown expert {name!r}; known: {sorted(EXPERTS)}")
    return EXPERTS[name](env)


class ExpertLabels(gymnasium.Wrapper):
    """Runs a privileged expert beside the env; every reset/step info gets ``expert_action`` (what the
    expert would do now) and ``expert_acting`` (False when the env ignores the next action).

    The expert is called exactly once per env step, so stateful experts (phases, re-planning every k
    steps) behave as if they were driving, whoever actually acts."""

    def __init__(self, env: gymnasium.Env, expert: str) -> None:
        super().__init__(env)
        self.expert = make_expert(expert, env)
        self._act: Callable[[Any], Any] = getattr(self.expert, "act", None) or self.expert

    def _label(self, obs: Any, info: dict[str, Any]) -> dict[str, Any]:
        info = dict(info)
        info["expert_action"] = np.asarray(self._act(obs), dtype=np.float32)
        acting = getattr(self.expert, "acting", None)
        info["expert_acting"] = bool(acting()) if acting is not None else True
        return info

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        if hasattr(self.expert, "reset"):
            self.expert.reset()
        return obs, self._label(obs, info)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._label(obs, info)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
class Dataset:
    """Growing (observation, expert action) pairs; observations as a dict of stacked arrays."""

    def __init__(self) -> None:
        self.obs: dict[str, list[np.ndarray]] = {}
        self.actions: list[np.ndarray] = []

    def add(self, obs: Any, action: np.ndarray) -> None:
        # copies: VecEnvs reuse their observation buffers and the caller reuses its label array
        if isinstance(obs, dict):
            for k, v in obs.items():
                self.obs.setdefault(k, []).append(np.array(v, copy=True))
        else:
            self.obs.setdefault("", []).append(np.array(obs, copy=True))
        self.actions.append(np.array(action, dtype=np.float32, copy=True))

    def __len__(self) -> int:
        return len(self.actions)

    def arrays(self) -> tuple[dict[str, np.ndarray] | np.ndarray, np.ndarray]:
        obs = {k: np.stack(v) for k, v in self.obs.items()}
        return (obs[""] if "" in obs else obs), np.stack(self.actions)


def _index(obs: Any, i: int) -> Any:
    return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]


def collect(
    venv: Any,
    policy: Any,
    episodes: int,
    data: Dataset,
    expert_drives: bool,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
    cut_idle: bool = False,
) -> dict[str, float]:
    """Roll out ``episodes`` episodes in ``venv`` (whose envs carry :class:`ExpertLabels`); the expert
    (``expert_drives``) or the policy's deterministic action (+ Gaussian ``noise_std``) drives; every
    acting step's (observation, expert action) goes into ``data``. Returns episode statistics.

    ``cut_idle``: reset an env as soon as it stops using actions (the assisted grasp after its descent):
    the rest of the episode has nothing to label, so this saves its simulation; such episodes do not
    count toward ``success_rate`` (None when no episode ran to its end)."""
    rng = rng or np.random.default_rng(0)
    n = venv.num_envs
    obs = venv.reset()
    infos = list(venv.reset_infos)
    labels = np.stack([i["expert_action"] for i in infos])
    acting = np.array([i["expert_acting"] for i in infos])
    done_eps = successes = finished = steps = kept = 0
    returns = np.zeros(n)
    ep_returns: list[float] = []
    while done_eps < episodes:
        if cut_idle and not acting.all():
            done_eps += _reset_idle(venv, obs, labels, acting, returns)
            continue
        act = _action(venv, policy, obs, labels if expert_drives else None, noise_std, rng)
        for i in range(n):
            if acting[i]:
                data.add(_index(obs, i), labels[i])
                kept += 1
        obs, rewards, dones, step_infos = venv.step(act)
        steps += n
        returns += rewards
        for i in range(n):
            src = step_infos[i]
            if dones[i]:
                done_eps += 1
                finished += 1
                successes += bool(src.get("is_success", False))
                ep_returns.append(float(returns[i]))
                returns[i] = 0.0
                src = venv.reset_infos[i]
            labels[i] = src["expert_action"]
            acting[i] = src["expert_acting"]
    return {
        "episodes": done_eps,
        "success_rate": successes / finished if finished else None,
        "mean_return": float(np.mean(ep_returns)) if ep_returns else None,
        "env_steps": steps,
        "samples": kept,
    }


def _action(venv: Any, policy: Any, obs: Any, labels: np.ndarray | None, noise_std: float,
            rng: np.random.Generator) -> np.ndarray:
    """The executed actions: the expert's ``labels`` (when it drives) or the policy's deterministic ones,
    plus Gaussian ``noise_std``, clipped to the action space."""
    if labels is not None:
        act = labels.copy()
    else:
        act, _ = policy.predict(obs, deterministic=True)
    if noise_std > 0:
        act = act + rng.normal(0.0, noise_std, size=act.shape)
    low, high = venv.action_space.low, venv.action_space.high
    return np.clip(act, low, high).astype(np.float32)


def _reset_idle(venv: Any, obs: Any, labels: np.ndarray, acting: np.ndarray, returns: np.ndarray) -> int:
    """Reset (in place) every env that stopped using actions; returns how many."""
    idle = np.flatnonzero(~acting)
    for i in idle:
        o, info = venv.env_method("reset", indices=[int(i)])[0]
        if isinstance(obs, dict):
            for k in obs:
                obs[k][i] = o[k]
        else:
            obs[i] = o
        labels[i], acting[i] = info["expert_action"], info["expert_acting"]
        returns[i] = 0.0
    return len(idle)


# ---------------------------------------------------------------------------------------------
# behaviour cloning
# ---------------------------------------------------------------------------------------------
def _augment(obs_t: Any, pad: int) -> Any:
    """Random shift (DrQ), the same offset for every image-like key of a sample (camera and depth
    stay pixel-aligned)."""
    if pad <= 0 or not isinstance(obs_t, dict):
        return obs_t
    keys = [k for k, v in obs_t.items() if v.dim() in (3, 4) and v.shape[-1] > 8 and v.shape[-2] > 8]
    if not keys:
        return obs_t
    parts, sizes = [], []
    for k in keys:
        v = obs_t[k].float()
        v = v.unsqueeze(1) if v.dim() == 3 else v  # (B, H, W) depth -> (B, 1, H, W)
        parts.append(v)
        sizes.append(v.shape[1])
    shifted = random_shift(torch.cat(parts, dim=1), pad)
    out = dict(obs_t)
    for k, chunk in zip(keys, torch.split(shifted, sizes, dim=1)):
        out[k] = chunk.squeeze(1) if obs_t[k].dim() == 3 else chunk
    return out


def fit_bc(
    policy: Any,
    data: Dataset,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 3e-4,
    augment_pad: int = 4,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Regress ``policy``'s mean action (an SB3 ``ActorCriticPolicy``) onto the data set's expert
    actions; returns the mean loss of each epoch."""
    obs, actions = data.arrays()
    n = len(actions)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = ScaledLRAdam(params, lr=learning_rate)  # plain Adam, but honours an encoder's lr_scale as PPO does
    gen = np.random.default_rng(seed)
    losses = []
    policy.set_training_mode(True)
    for epoch in range(epochs):
        order = gen.permutation(n)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            obs_t, _ = policy.obs_to_tensor(_index(obs, idx) if isinstance(obs, dict) else obs[idx])
            obs_t = _augment(obs_t, augment_pad)
            target = torch.as_tensor(actions[idx], device=policy.device)
            mean = policy.get_distribution(obs_t).distribution.mean
            loss = torch.nn.functional.mse_loss(mean, target)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if log is not None:
            log(f"    bc epoch {epoch + 1}/{epochs}: mse {losses[-1]:.4f} ({n:,} samples)")
    policy.set_training_mode(False)
    return losses


def run_imitation(model: Any, make_venv: Callable[[], Any], settings: Any, seed: int = 0,
                  log: Callable[[str], None] = print, logger: Any = None) -> list[dict[str, Any]]:
    """Demonstrations, BC and DAgger rounds on ``model.policy`` per ``settings`` (a recipe's
    ``imitation`` section); ``make_venv()`` builds the labelling VecEnv. Returns one record per round."""
    rng = np.random.default_rng(seed)
    data = Dataset()
    history: list[dict[str, Any]] = []
    venv = make_venv()
    try:
        rounds = [("demos", settings.episodes, True, settings.demo_noise_std)]
        rounds += [(f"dagger {k + 1}", settings.dagger_episodes, False, settings.dagger_noise_std)
                   for k in range(settings.dagger_rounds)]
        for r, (name, episodes, expert_drives, noise) in enumerate(rounds):
            t0 = time.perf_counter()
            stats = collect(venv, model.policy, episodes, data, expert_drives, noise, rng, settings.cut_idle)
            t1 = time.perf_counter()
            who = "expert" if expert_drives else "student"
            rate = stats["success_rate"]
            success = "" if rate is None else f", success {100 * rate:.0f} %"
            log(f"  imitation {name}: {who} drove {stats['episodes']} episodes{success}, "
                f"{stats['samples']:,} labelled steps ({t1 - t0:.0f} s)")
            losses = fit_bc(model.policy, data, settings.epochs, settings.batch_size, settings.learning_rate,
                            settings.augment_pad, seed + r, log=log)
            t2 = time.perf_counter()
            log(f"    behaviour cloning on {len(data):,} samples: mse {losses[0]:.4f} -> {losses[-1]:.4f} ({t2 - t1:.0f} s)")
            rec = {"round": name, "driver": who, **stats, "dataset": len(data), "bc_mse": losses[-1],
                   "collect_s": round(t1 - t0, 1), "fit_s": round(t2 - t1, 1)}
            history.append(rec)
            if logger is not None:
                if rate is not None:
                    logger.record("imitation/driver_success_rate", rate)
                logger.record("imitation/bc_mse", losses[-1])
                logger.record("imitation/dataset", len(data))
                logger.dump(r)
    finally:
        venv.close()
    log_std = getattr(model.policy, "log_std", None)
    if settings.log_std is not None and isinstance(log_std, torch.nn.Parameter):
        with torch.no_grad():
            log_std.fill_(settings.log_std)
    return history
