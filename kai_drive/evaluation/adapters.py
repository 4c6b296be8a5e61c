"""Policy adapters: what the evaluator drives is anything with ``__call__(obs) -> action`` (numpy).

:func:`as_policy` wraps what a user has:

* an SB3 model (``PPO``/``SAC``/``TD3``...) -> :class:`SB3Policy` (deterministic actions; optional
  ``VecNormalize`` observation statistics; differentiable, so adversarial attacks and attribution work);
* an :class:`EvalPolicy` -> itself;
* any callable ``obs -> action`` -> :class:`CallablePolicy` (not differentiable: attacks and attribution
  maps are skipped with a note).

:func:`load_run` reads a training run folder (:class:`~kai_drive.training.runs.RunFolder`: ``config.yaml``,
``final_model.zip`` or ``best_model.zip`` and their VecNormalize stats) and returns an :class:`SB3Policy` whose
``env_config`` is the run's (e.g. the camera disabled), which the evaluator applies to the env.
:func:`scripted_policy` is the privileged IDM + pure-pursuit (driving) or scripted grasp baseline.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import gymnasium
import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from kai_drive.catalog import task_family
from kai_drive.experts.driving import IDMPurePursuit
from kai_drive.experts.grasp import ScriptedGraspPolicy
from kai_drive.perception.sb3 import attach_encoder
from kai_drive.training.algos import LOADABLE, algorithm
from kai_drive.training.runs import RunFolder, check_run_renderer

__all__ = ["EvalPolicy", "CallablePolicy", "SB3Policy", "as_policy", "load_run", "load_model", "scripted_policy"]


class EvalPolicy:
    """Base class. ``reset(env)`` is called after every ``env.reset`` (scripted policies bind the env;
    stateful ones clear their memory); ``__call__(obs)`` returns the action for one observation."""

    name: str = "policy"
    differentiable: bool = False
    env_config: dict[str, Any] = {}
    frame_stack: int = 1

    def reset(self, env: Any) -> None:  # noqa: D401
        pass

    def __call__(self, obs: Any) -> np.ndarray:
        raise NotImplementedError


class CallablePolicy(EvalPolicy):
    """Any ``obs -> action`` callable (not differentiable)."""

    def __init__(self, fn: Callable[[Any], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)

    def reset(self, env: Any) -> None:
        if hasattr(self.fn, "reset"):
            try:
                self.fn.reset(env)
            except TypeError:
                self.fn.reset()

    def __call__(self, obs: Any) -> np.ndarray:
        return np.asarray(self.fn(obs), dtype=np.float32)


class _Scripted(EvalPolicy):
    """The privileged scripted baseline of the env's task (rebinds to the env at every reset)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.name = "scripted-idm-pp" if kind == "driving" else "scripted-grasp"
        self._impl: Any = None

    def reset(self, env: Any) -> None:
        if self.kind == "driving":
            if self._impl is None or self._impl.env is not env.unwrapped:
                self._impl = IDMPurePursuit(env)
        else:
            if self._impl is None or self._impl.env is not env:
                self._impl = ScriptedGraspPolicy(env)
            self._impl.reset()

    def __call__(self, obs: Any) -> np.ndarray:
        if self._impl is None:
            raise RuntimeError("scripted policy: reset(env) must be called after env.reset()")
        fn = self._impl.act if hasattr(self._impl, "act") else self._impl
        return np.asarray(fn(obs), dtype=np.float32)


def scripted_policy(env_id: str) -> EvalPolicy:
    """The scripted (privileged) baseline for ``env_id``: IDM + pure pursuit, or the scripted grasp."""
    return _Scripted(task_family(env_id))


class SB3Policy(EvalPolicy):
    """A Stable-Baselines3 model as a deterministic, differentiable policy.

    Args:
        model: the SB3 algorithm (its ``policy`` is a torch module).
        vecnormalize: a ``VecNormalize`` (or its pickle's object) whose observation statistics are
            applied before the network (as in training); None = no normalisation.
        env_config: env overrides the model was trained with (the evaluator applies them).
        frame_stack: the run's frame stack (observations are stacked here, like ``VecFrameStack``).
    """

    differentiable = True

    def __init__(self, model: Any, vecnormalize: Any = None, env_config: dict | None = None,
                 frame_stack: int = 1, name: str | None = None) -> None:
        self.model = model
        self.torch = torch
        self.env_config = dict(env_config or {})
        self.frame_stack = int(frame_stack)
        self.name = name or type(model).__name__.lower()
        self.norm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.clip_obs = np.inf
        if vecnormalize is not None and getattr(vecnormalize, "norm_obs", False):
            rms = vecnormalize.obs_rms
            eps = float(vecnormalize.epsilon)
            self.clip_obs = float(vecnormalize.clip_obs)
            keys = vecnormalize.norm_obs_keys if isinstance(rms, dict) else [None]
            for k in keys:
                r = rms[k] if k is not None else rms
                self.norm[k] = (np.asarray(r.mean, np.float32), np.sqrt(np.asarray(r.var, np.float32) + eps))
        space = model.observation_space
        self.action_low = np.asarray(model.action_space.low, np.float32)
        self.action_high = np.asarray(model.action_space.high, np.float32)
        self._stack: dict[str, np.ndarray] | None = None
        self.obs_keys = list(space.spaces) if hasattr(space, "spaces") else None
        self.differentiable = self.frame_stack == 1
        self.model.policy.set_training_mode(False)

    # -- numpy path --------------------------------------------------------------------------------
    def reset(self, env: Any) -> None:
        self._stack = None

    def _stacked(self, obs: dict) -> dict:
        if self.frame_stack == 1:
            return obs
        if self._stack is None:
            self._stack = {k: np.concatenate([np.zeros_like(v)] * self.frame_stack, axis=-1) for k, v in obs.items()}
        out = {}
        for k, v in obs.items():
            n = v.shape[-1]
            s = np.roll(self._stack[k], -n, axis=-1)
            s[..., -n:] = v
            out[k] = s
        self._stack = out
        return out

    def normalize(self, obs: dict) -> dict:
        out = dict(obs)
        for k, (m, s) in self.norm.items():
            x = obs[k] if k is not None else obs
            out[k] = np.clip((np.asarray(x, np.float32) - m) / s, -self.clip_obs, self.clip_obs)
        return out

    def __call__(self, obs: Any) -> np.ndarray:
        o = self.normalize(self._stacked(obs))
        act, _ = self.model.predict(o, deterministic=True)
        return np.asarray(act, dtype=np.float32).reshape(-1)

    # -- torch path (attacks, attribution) -----------------------------------------------------------
    def torch_action(self, obs: dict) -> Any:
        """Deterministic action (batch, act_dim) of a batch of RAW observations given as float tensors
        (images in 0..255), differentiable w.r.t. every input. Not clipped to the action space."""
        th = self.torch
        o = {}
        spaces = getattr(self.model.observation_space, "spaces", {})
        for k, v in obs.items():
            if k in self.norm:
                m, s = self.norm[k]
                v = th.clamp((v - th.as_tensor(m)) / th.as_tensor(s), -self.clip_obs, self.clip_obs)
            sub = spaces.get(k)
            # SB3 trained image policies on channel-first images (VecTransposeImage); predict() transposes
            # HxWxC itself, this torch path must do the same
            if sub is not None and len(sub.shape) == 3 and v.dim() == 4 and tuple(v.shape[1:]) != tuple(sub.shape):
                if tuple(v.shape[1:]) == (sub.shape[1], sub.shape[2], sub.shape[0]):
                    v = v.permute(0, 3, 1, 2)
            o[k] = v
        pol = self.model.policy
        if hasattr(pol, "get_distribution"):
            act = pol.get_distribution(o).distribution.mean  # Gaussian mean = deterministic action
        else:
            act = pol._predict(o, deterministic=True)
        if getattr(pol, "squash_output", False):
            low, high = th.as_tensor(self.action_low), th.as_tensor(self.action_high)
            act = low + 0.5 * (act + 1.0) * (high - low)
        return act

    def to_tensors(self, obs: dict) -> dict:
        th = self.torch
        return {k: th.as_tensor(np.asarray(v, np.float32))[None] for k, v in obs.items()}


def as_policy(obj: Any, name: str | None = None) -> EvalPolicy:
    """Wrap an SB3 model, an :class:`EvalPolicy` or a callable ``obs -> action``."""
    if isinstance(obj, EvalPolicy):
        return obj
    if isinstance(obj, BaseAlgorithm):
        return SB3Policy(obj, name=name)
    if callable(obj):
        return CallablePolicy(obj, name=name)
    raise TypeError(f"policy must be an SB3 model, an EvalPolicy or a callable obs -> action, got {type(obj).__name__}")


def load_model(path: str | Path, algo: str | None = None, vecnormalize: str | Path | None = None,
               env_config: dict | None = None, frame_stack: int = 1, encoder: dict | None = None,
               env_id: str | None = None) -> SB3Policy:
    """An SB3 ``.zip`` (algo from ``algo`` or the file name, e.g. ``ppo``) as an :class:`SB3Policy`.

    ``encoder`` (a recipe's ``encoder:`` section, with ``env_id``): the model was trained on frozen
    embeddings; the encoder is put back in front of it (:func:`kai_drive.perception.sb3.attach_encoder`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such file (an SB3 .zip saved by model.save)")
    algo = (algo or next((a for a in LOADABLE if a in str(path).lower()), "ppo")).lower()
    model = algorithm(algo).load(str(path), device="cpu")
    if encoder:
        model = attach_run_encoder(model, encoder, env_id, env_config)
    vn = None
    if vecnormalize is not None and Path(vecnormalize).exists():
        with open(vecnormalize, "rb") as fh:  # SB3's own format (VecNormalize.save is a pickle)
            vn = pickle.load(fh)
    return SB3Policy(model, vn, env_config, frame_stack, name=f"{algo}:{path.parent.name}/{path.stem}")


def attach_run_encoder(model: Any, encoder: dict, env_id: str | None, env_config: dict | None) -> Any:
    """Front a model trained on embeddings with its frozen encoder (raw Dict observations in)."""
    if not env_id:
        raise ValueError("a model trained on encoder embeddings needs its env id to rebuild the observation space")
    env = gymnasium.make(env_id, config=dict(env_config or {}))
    try:
        space = env.observation_space
    finally:
        env.close()
    return attach_encoder(model, space, encoder.get("pretrained", "lane-keep"))


def load_run(run_dir: str | Path, checkpoint: str = "final") -> tuple[SB3Policy, str]:
    """``(policy, env_id)`` of a training run folder; ``checkpoint`` is ``final`` or ``best``.

    The policy's ``env_config`` is the run's **test** config (``env_config`` + ``test_env_config`` of its
    recipe, e.g. the grasp test objects): what its final evaluation used, never what selected the model.
    A run made before ``test_env_config`` existed gets ``env_config`` + ``eval_env_config`` (its final
    evaluation's). ``policy.trained_renderer`` is the renderer of its training images (config.yaml's
    ``renderer``; "tiny" for runs that predate the key); a :class:`RendererMismatchWarning` names both when
    this machine's env (with that config) renders with another one and the policy sees images.

    The model ``.zip`` and VecNormalize ``.pkl`` are pickles: loading a run folder runs code from it, so
    load only runs you trust.
    """
    run = RunFolder(run_dir)
    if not run.is_run():
        raise FileNotFoundError(f"--run {run.path}: no config.yaml (expected a folder runs/<alias>/<algo>_<n>/)")
    cfg = run.config(f"--run {run.path}: ")
    if checkpoint not in RunFolder.MODELS:
        raise ValueError(f"checkpoint must be 'final' or 'best', got {checkpoint!r}")
    model, vn = run.model_file(checkpoint), run.stats_file(checkpoint)
    if not model.exists():
        raise FileNotFoundError(f"--run {run.path}: no {model.name} (is training finished? try --checkpoint best)")
    recipe = cfg.get("recipe") or {}
    env_config = run.env_config("test", cfg)
    env_id = str(cfg.get("env_id"))
    pol = load_model(model, cfg.get("algo", "ppo"), vn if vn.exists() else None, env_config,
                     int(recipe.get("frame_stack", 1) or 1), encoder=recipe.get("encoder"),
                     env_id=env_id)
    pol.name = f"{cfg.get('algo', 'ppo')}:{run.path.parent.name}/{run.path.name}"
    pol.trained_renderer = check_run_renderer(cfg, env_id, env_config, f"the policy of {run.path}")
    return pol, env_id
