"""Rebuild a shipped agent from its spec and weights, without pickle: :func:`load` and :class:`PretrainedPolicy`.

The torch module is the SB3 policy class the spec names (``algo.policy_aliases[policy]``), built with the
spec's ``policy_kwargs`` (class names resolved through kai_drive.training.algos); an agent on the shared frozen
encoder gets a frozen :class:`~kai_drive.perception.sb3.PerceptionExtractor` holding the shipped encoder (its
file's sha256 must equal the spec's), exactly as :func:`~kai_drive.perception.sb3.attach_encoder` fronts a run's
model. The heads (and any trainable extractor) come from ``<name>.pt``, read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kai_drive.evaluation.adapters import SB3Policy
from kai_drive.perception.spec import SpecMismatchError
from kai_drive.pretrained.spec import (
    SENSOR_CONDITIONS, AgentError, AgentSpec, agent_paths, available, box_of, default_name, dict_space_of, read_spec,
    restore_hint, sha256_of,
)

IMAGE_KEYS = ("camera", "depth", "segmentation")


class AgentMismatchError(SpecMismatchError):
    """The env (or a shipped file) differs from what the agent was trained on; the message names each difference."""


def _encoder_file(spec: AgentSpec) -> Any:
    from kai_drive.perception.weights import WEIGHTS_DIR

    return WEIGHTS_DIR / spec.encoder.file


def check_encoder(spec: AgentSpec) -> None:
    """:class:`AgentMismatchError` when the shipped encoder file is missing or is not the one the agent was trained on."""
    if spec.encoder is None:
        return
    path = _encoder_file(spec)
    if not path.is_file():
        raise AgentMismatchError(f"pretrained agent {spec.name!r} sits on the shared encoder {spec.encoder.id!r}, but "
                                 f"{path} is missing; reinstall kai-drive")
    got = sha256_of(path)
    if got != spec.encoder.sha256:
        raise AgentMismatchError(
            f"pretrained agent {spec.name!r} was trained on the encoder {spec.encoder.id!r} with sha256 "
            f"{spec.encoder.sha256[:16]}..., but {path} has sha256 {got[:16]}... (encoder hash differs: the shipped "
            f"encoder was changed or replaced). Restore the encoder (git checkout kai_drive/perception/weights/) or "
            f"re-export / fine-tune the agent on the new encoder (python -m kai_drive.train --env {spec.alias} "
            f"--init pretrained)")


def policy_kwargs(spec: AgentSpec) -> dict[str, Any]:
    """The SB3 policy kwargs of the spec, class names resolved."""
    from kai_drive.training.algos import activations, extractors, optimizers

    pk = dict(spec.policy.policy_kwargs)
    if "activation_fn" in pk:
        pk["activation_fn"] = activations()[pk["activation_fn"]]
    if "optimizer_class" in pk:
        pk["optimizer_class"] = optimizers()[pk["optimizer_class"]]
    if "features_extractor_class" in pk:
        pk["features_extractor_class"] = extractors()[pk["features_extractor_class"]]
    return pk


def read_weights(name: Any, spec: AgentSpec) -> dict[str, torch.Tensor]:
    """The agent's state dict (tensors only: ``weights_only=True``), its sha256 checked against the spec."""
    path, _ = agent_paths(name)
    got = sha256_of(path)
    if got != spec.weights.sha256:
        raise AgentError(f"{path}: sha256 {got[:16]}... differs from its spec's {spec.weights.sha256[:16]}... (the .pt "
                         f"and the .json do not belong together); {restore_hint(path)}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AgentError(f"{path}: expected a state_dict of tensors; {restore_hint(path)}")
    return state


def build_module(spec: AgentSpec, state: dict[str, torch.Tensor]) -> Any:
    """The SB3 policy (a torch module) of ``spec`` with ``state`` loaded, in eval mode on the CPU."""
    from kai_drive.training.algos import algorithm

    check_encoder(spec)
    cls = algorithm(spec.policy.algo).policy_aliases.get(spec.policy.policy)
    if cls is None:
        raise AgentError(f"agent {spec.name!r}: {spec.policy.algo} has no policy {spec.policy.policy!r}")
    obs_space = dict_space_of(spec.policy.observation_space)
    module = cls(obs_space, box_of(spec.action_space), lambda _: 0.0, **policy_kwargs(spec))
    load_heads(module, state, shared_encoder=spec.encoder is not None, what=f"agent {spec.name!r}")
    module.set_training_mode(False)
    return module


def load_heads(module: Any, state: dict[str, torch.Tensor], shared_encoder: bool, what: str) -> None:
    """Load ``state`` into an SB3 policy; with ``shared_encoder`` the features extractor keeps its own (shipped)
    weights, otherwise every parameter must come from ``state``. Shapes must match; names each mismatch."""
    target = module.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape) if k in target else 'missing'}"
           for k, v in state.items() if k not in target or target[k].shape != v.shape]
    if bad:
        raise AgentMismatchError(f"{what}: the weights do not fit the policy (weights vs policy): {'; '.join(bad[:5])}")
    missing = [k for k in target if k not in state and not (shared_encoder and "features_extractor" in k)]
    if missing:
        raise AgentMismatchError(f"{what}: no weights for {missing[:5]}")
    module.load_state_dict(state, strict=False)


def _sensor_diffs(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    out = []
    for sensor, settings in want.items():
        have = got.get(sensor) or {}
        for key, value in settings.items():
            if key in SENSOR_CONDITIONS:
                continue
            other = have.get(key)
            if isinstance(value, (list, tuple)) or isinstance(other, (list, tuple)):
                same = other is not None and np.allclose(np.asarray(value, float), np.asarray(other, float))
            else:
                same = value == other
            if not same:
                out.append(f"sensor setting sensors.{sensor}.{key}: agent {value!r}, env {other!r}")
    return out


def _obs_diffs(spec: AgentSpec, space: Any) -> list[str]:
    keys = getattr(space, "spaces", None)
    if keys is None:
        return [f"observation space: agent a Dict of {sorted(spec.observation_spec)}, env {type(space).__name__}"]
    out = [f"observation key {k!r}: the agent needs it, the env has none" for k in spec.observation_spec if k not in keys]
    out += [f"observation key {k!r}: the env has it, the agent was not trained on it" for k in keys
            if k not in spec.observation_spec]
    for k, b in spec.observation_spec.items():
        if k in keys:
            sub = keys[k]
            if list(sub.shape) != b.shape:
                out.append(f"observation {k!r} shape: agent {tuple(b.shape)}, env {tuple(sub.shape)}")
            if str(np.dtype(sub.dtype)) != b.dtype:
                out.append(f"observation {k!r} dtype: agent {b.dtype}, env {np.dtype(sub.dtype)}")
    return out


def env_differences(spec: AgentSpec, env: Any) -> list[str]:
    """Each way a gymnasium env (or an SB3 VecEnv of kai-drive envs) differs from what the agent was trained on:
    observation keys / shapes / dtypes, sensor settings (noise and dropout excepted), renderer."""
    if hasattr(env, "get_attr") and hasattr(env, "num_envs"):  # a VecEnv: ask its first env
        space = env.get_attr("observation_space", indices=[0])[0]
        renderer = env.get_attr("renderer", indices=[0])[0]
        sensors = env.get_attr("spec_data", indices=[0])[0].sensors.model_dump(mode="json")
    else:
        base = env.unwrapped
        space, renderer = env.observation_space, getattr(base, "renderer", None)
        sensors = base.spec_data.sensors.model_dump(mode="json")
    diffs = _obs_diffs(spec, space)
    diffs += _sensor_diffs(spec.sensors, sensors)
    if any(k in IMAGE_KEYS for k in spec.observation_spec) and renderer != spec.renderer:
        diffs.append(f"renderer: agent trained on {spec.renderer!r} images, env renders with {renderer!r}")
    return diffs


def init_model(model: Any, name: Any, venv: Any, encoder_id: str | None) -> AgentSpec:
    """Fine-tuning (``kai_drive.train --init pretrained``): put the agent's weights into a freshly built SB3
    ``model`` whose training envs are ``venv``, and its VecNormalize statistics (observations when normalised,
    returns) into the ``VecNormalize`` of ``venv``. ``encoder_id``: the shared encoder the recipe trains on
    (``encoder.pretrained``), which must be the agent's. :class:`AgentMismatchError` names what differs."""
    from kai_drive.training.envs import find_vec_normalize

    spec = read_spec(name)
    what = f"--init pretrained:{spec.name}"
    want = spec.encoder.id if spec.encoder is not None else None
    if want != encoder_id:
        raise AgentMismatchError(f"{what}: the agent sits on the shared encoder {want!r}, the recipe on {encoder_id!r}; "
                                 f"use the agent's recipe ({spec.training.recipe.get('encoder')})")
    if spec.policy.algo != type(model).__name__.lower():
        raise AgentMismatchError(f"{what}: the agent is {spec.policy.algo}, the run {type(model).__name__}; "
                                 f"pass --algo {spec.policy.algo}")
    check_encoder(spec)
    diffs = env_differences(spec, venv)
    if diffs:
        raise AgentMismatchError(f"{what}: the training envs differ from the agent's: " + "; ".join(diffs))
    load_heads(model.policy, read_weights(name, spec), shared_encoder=spec.encoder is not None, what=what)
    vn, n = find_vec_normalize(venv), spec.normalisation
    if vn is not None and n is not None:
        if vn.norm_obs and n.obs:
            for k, v in n.obs.items():
                rms = vn.obs_rms[k]
                rms.mean, rms.var = np.asarray(v["mean"], np.float64), np.asarray(v["var"], np.float64)
                rms.count = float(v.get("count", 1e4))
        if n.reward:
            vn.ret_rms.mean, vn.ret_rms.var = np.float64(n.reward["mean"]), np.float64(n.reward["var"])
            vn.ret_rms.count = float(n.reward["count"])
    return spec


class PretrainedPolicy(SB3Policy):
    """A shipped agent: ``policy(obs) -> action`` (one observation, deterministic), SB3's
    ``predict(obs, state=None, episode_start=None, deterministic=True) -> (action, state)`` (one or a batch),
    and the evaluator's :class:`~kai_drive.evaluation.adapters.EvalPolicy` API (differentiable torch path).

    ``spec`` is the agent's :class:`~kai_drive.pretrained.spec.AgentSpec`; ``env_config`` is the config it was
    evaluated with (the evaluator and play apply it); ``check_env(env)`` raises :class:`AgentMismatchError`
    naming every difference, and runs by itself at the first ``reset(env)`` of each env the evaluator drives.
    """

    def __init__(self, module: Any, spec: AgentSpec) -> None:
        super().__init__(_ModuleAsModel(module), None, spec.env_config, spec.policy.frame_stack, name=f"pretrained:{spec.name}")
        self.agent = spec
        self.policy = module
        self.trained_renderer = spec.renderer
        self.source = spec.name
        self._checked: set[int] = set()
        n = spec.normalisation
        if n is not None and n.norm_obs and n.obs:
            self.clip_obs = float(n.clip_obs)
            self.norm = {k: (np.asarray(v["mean"], np.float32), np.sqrt(np.asarray(v["var"], np.float32) + n.epsilon))
                         for k, v in n.obs.items()}

    def check_env(self, env: Any) -> None:
        """Raise :class:`AgentMismatchError` when ``env`` differs from what the agent was trained on."""
        diffs = env_differences(self.agent, env)
        if diffs:
            raise AgentMismatchError(
                f"pretrained agent {self.agent.name!r} ({self.agent.env_id}) does not fit this env: " + "; ".join(diffs)
                + f". Make the env with the agent's config: gymnasium.make({self.agent.env_id!r}, config=policy.env_config)"
                f" (= {self.agent.env_config})")

    def reset(self, env: Any) -> None:
        key = id(getattr(env, "unwrapped", env))
        if key not in self._checked:
            self.check_env(env)
            self._checked.add(key)
        super().reset(env)

    def _check_obs(self, obs: Any, batched: bool) -> None:
        if not isinstance(obs, dict):
            raise AgentMismatchError(f"pretrained agent {self.agent.name!r} takes a dict observation "
                                     f"{sorted(self.agent.observation_spec)}, got {type(obs).__name__}")
        diffs = [f"{k!r} missing" for k in self.agent.observation_spec if k not in obs]
        for k, b in self.agent.observation_spec.items():
            if k in obs:
                shape = tuple(np.shape(obs[k]))[1 if batched else 0:]
                want = tuple(b.shape[:-1]) + (b.shape[-1] * self.frame_stack,) if self.frame_stack > 1 else tuple(b.shape)
                if shape != want:
                    diffs.append(f"{k!r} shape {shape}, agent expects {want}")
        if diffs:
            raise AgentMismatchError(f"pretrained agent {self.agent.name!r}: observation differs: " + "; ".join(diffs))

    def __call__(self, obs: Any) -> np.ndarray:
        self._check_obs(obs, batched=False)
        return super().__call__(obs)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        """SB3's signature: raw observation(s) (one dict, or a batch from a VecEnv; stacked when frame_stack > 1)
        -> ``(action(s), state)``; normalised with the agent's statistics like its training VecNormalize."""
        spec0 = self.agent.observation_spec
        k0 = next(iter(spec0))
        batched = isinstance(observation, dict) and np.ndim(observation.get(k0)) > len(spec0[k0].shape)
        self._check_obs(observation, batched)
        return self.policy.predict(self.normalize(observation), state, episode_start, deterministic)


class _ModuleAsModel:
    """What :class:`SB3Policy` reads of an SB3 model (``policy``, spaces, ``predict``), for a bare policy module."""

    def __init__(self, module: Any) -> None:
        self.policy = module
        self.observation_space = module.observation_space
        self.action_space = module.action_space

    def predict(self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True) -> Any:
        return self.policy.predict(obs, state, episode_start, deterministic)


def load(name: Any = "lane-keep") -> PretrainedPolicy:
    """The shipped agent ``name`` (:func:`kai_drive.pretrained.available`) or an exported ``<name>.json`` path,
    rebuilt from its spec and weights (no pickle). ``policy.source`` is ``name`` as given."""
    spec = read_spec(name)
    pol = PretrainedPolicy(build_module(spec, read_weights(name, spec)), spec)
    pol.source = str(name)
    return pol


def for_env(name: str | None, env: str | None) -> tuple[PretrainedPolicy, str]:
    """``--pretrained [NAME]`` with ``--env ENV``: ``(the agent, its env id)``; NAME defaults to the env's alias.
    ``ValueError`` when neither is given, or when the agent was trained on another env than ``--env``."""
    from kai_drive.catalog import resolve_env

    if not name:
        if not env:
            raise ValueError("--pretrained without a NAME needs --env (the env's shipped agent has its alias as name)")
        name = default_name(env)
        if name not in available():
            raise ValueError(f"no shipped agent for --env {env} yet (shipped: {available()}); docs/models.md")
    pol = load(name)
    drives = pol.agent.envs or [pol.agent.env_id]
    if env and resolve_env(env)[0] not in drives:
        raise AgentMismatchError(f"pretrained agent {pol.agent.name!r} was trained on {', '.join(drives)}, not on "
                                 f"{resolve_env(env)[0]}; drop --env or pick the env's agent ({available()})")
    return pol, resolve_env(env)[0] if env else pol.agent.env_id
