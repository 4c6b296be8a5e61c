"""Ways to use the encoders with stable-baselines3.

1. :class:`PerceptionExtractor` — a ``BaseFeaturesExtractor`` for Dict observations, inside the policy
   (frozen or fine-tuned with the policy)::

       PPO("MultiInputPolicy", env, policy_kwargs=dict(
           features_extractor_class=PerceptionExtractor,
           features_extractor_kwargs=dict(pretrained="lane-keep", freeze=True)))

2. :class:`EncodedVecEnv` — a ``VecEnvWrapper`` that encodes every env's observation in one batch on
   one device (``torch.no_grad``, frozen) and hands the agent a ``Box`` of embeddings, so the agent
   trains a plain MLP (``PPO("MlpPolicy", EncodedVecEnv(venv, pretrained="lane-keep"))``). Each frame is
   encoded once, when the env emits it (episode-final observations in ``infos`` included). A training
   recipe's ``encoder:`` section does this; :func:`attach_encoder` turns the trained MLP back into a policy
   over raw observations.

Also :class:`ShiftCombinedExtractor`: SB3's NatureCNN extractor with DrQ random-shift augmentation (the
"scratch + random shift" baseline), and :class:`ScaledLRAdam`, the Adam that gives a fine-tuned encoder its own
(smaller) learning rate (``PerceptionExtractor(lr_scale=...)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from kai_drive.perception.encoders import EncoderConfig, MultiModalEncoder, obs_to_tensors
from kai_drive.perception.pretraining import random_shift
from kai_drive.perception.weights import load_encoder, resolve_device


#: attribute set on parameters whose learning rate is the optimizer's times its value (read by ScaledLRAdam)
LR_SCALE_ATTR = "_kai_lr_scale"


class ScaledLRAdam(torch.optim.Adam):
    """``torch.optim.Adam`` with per-parameter learning-rate multipliers.

    Parameters carrying the attribute ``_kai_lr_scale`` (set by ``PerceptionExtractor(lr_scale=s)``) are put in
    a param group of their own with ``lr_scale = s``; every step uses ``lr * lr_scale`` for that group. The
    group's ``lr`` itself stays the scheduled one, so SB3's learning-rate schedule (which writes ``lr`` into every
    group before each update) keeps working, and so do saving and loading (``lr_scale`` is in the state dict).
    Without tagged parameters it is plain Adam. Scaling the gradient instead would do nothing: Adam's update
    does not depend on the gradient's scale.
    """

    def __init__(self, params: Any, lr: float = 1e-3, **kwargs: Any) -> None:
        params = list(params)
        if params and isinstance(params[0], dict):  # already grouped by the caller
            groups = [{"lr_scale": 1.0, **g} for g in params]
        else:
            by_scale: dict[float, list[torch.nn.Parameter]] = {}
            for param in params:
                by_scale.setdefault(float(getattr(param, LR_SCALE_ATTR, 1.0)), []).append(param)
            groups = [{"params": ps, "lr_scale": scale} for scale, ps in by_scale.items()]
        super().__init__(groups, lr=lr, **kwargs)

    def step(self, closure: Any = None) -> Any:
        scheduled = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, scheduled):
                group["lr"] = lr


def check_lr_scales(policy: torch.nn.Module) -> None:
    """Raise ``ValueError`` if some trainable parameter of ``policy`` asks for a learning-rate scale
    (``PerceptionExtractor(lr_scale=...)``) that its optimizer would ignore (an optimizer other than
    :class:`ScaledLRAdam`)."""
    tagged = [p for p in policy.parameters() if p.requires_grad and getattr(p, LR_SCALE_ATTR, 1.0) != 1.0]
    optimizer = getattr(policy, "optimizer", None)
    if tagged and not isinstance(optimizer, ScaledLRAdam):
        raise ValueError(
            f"the features extractor asks for lr_scale={getattr(tagged[0], LR_SCALE_ATTR)}, but the policy's optimizer "
            f"is {type(optimizer).__name__}, which would ignore it: pass "
            "policy_kwargs=dict(optimizer_class=kai_drive.perception.sb3.ScaledLRAdam)"
        )


class PerceptionExtractor(BaseFeaturesExtractor):
    """SB3 features extractor: camera/lidar/state encoders fused into ``features_dim`` features.

    Args:
        observation_space: the policy's Dict space (SB3 may have transposed the camera to CxHxW).
        pretrained: ``"lane-keep"`` (shipped), a path to a ``.pt`` (with its ``.json``) or a pretraining
            output folder, or None for random init.
        freeze: True keeps every encoder weight fixed (no gradients); False fine-tunes with the policy.
        config: encoder architecture (random init only; pretrained weights bring their own).
        keys: observation keys to encode (default all known ones).
        lr_scale: when fine-tuning, the encoder's learning rate is the policy's times this (e.g. 0.1: the
            pretrained weights move 10x slower than the freshly initialised heads). Needs the policy's optimizer
            to be :class:`ScaledLRAdam` (``policy_kwargs=dict(optimizer_class=ScaledLRAdam)``; training recipes
            pick it by themselves); any other optimizer would silently ignore it, so :func:`check_lr_scales`
            (called by ``kai_drive.train``) refuses that.

    SB3 normalises uint8 images to [0, 1] before the extractor (``normalize_images=True``, the
    default); the extractor relies on it. Keep it on.
    """

    def __init__(self, observation_space: spaces.Dict, pretrained: str | Path | None = None, freeze: bool = False,
                 config: EncoderConfig | Mapping[str, Any] | None = None, keys: tuple[str, ...] | None = None,
                 lr_scale: float = 1.0) -> None:
        lr_scale = float(lr_scale)
        if not lr_scale > 0:
            raise ValueError(f"lr_scale must be > 0 (got {lr_scale}); use freeze=True to keep the encoder fixed")
        if freeze and lr_scale != 1.0:
            raise ValueError("lr_scale only applies when fine-tuning (freeze=False): a frozen encoder does not learn")
        encoder = load_encoder(observation_space, pretrained, config, keys)
        super().__init__(observation_space, features_dim=encoder.features_dim)
        self.encoder = encoder
        self.pretrained = pretrained
        self.freeze = bool(freeze)
        self.lr_scale = lr_scale
        if self.freeze:
            self.encoder.requires_grad_(False)
        elif lr_scale != 1.0:
            for param in self.encoder.parameters():
                setattr(param, LR_SCALE_ATTR, lr_scale)

    def apply(self, fn):
        """SB3's on-policy algorithms (PPO, A2C) re-initialise the features extractor with
        ``extractor.apply(init_weights)`` (``ortho_init``), which would overwrite pretrained weights with
        random ones. Pretrained encoders keep their weights; a random-init encoder takes SB3's init as usual."""
        if self.pretrained is not None:
            return self
        return super().apply(fn)

    def train(self, mode: bool = True):  # a frozen encoder stays in eval mode
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        # no torch.no_grad() when frozen: the weights have requires_grad=False, so training builds no graph
        # through the encoder anyway, while attacks and attribution maps still get gradients w.r.t. the pixels
        return self.encoder(observations)


class EncodedVecEnv(VecEnvWrapper):
    """Encode all envs' Dict observations in one batch; observations become ``Box(features_dim,)``.

    Args:
        venv: a VecEnv with a Dict observation space (raw uint8 HxWxC camera, as the env emits it).
        pretrained: as for :class:`PerceptionExtractor` (None: a frozen random-init encoder).
        device: ``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        encoder: an already-built :class:`MultiModalEncoder` (overrides ``pretrained``).

    The encoder is frozen (``eval()``, ``requires_grad_(False)``, ``torch.no_grad``).
    """

    def __init__(self, venv: VecEnv, pretrained: str | Path | None = "lane-keep", device: str | torch.device = "auto",
                 encoder: MultiModalEncoder | None = None, config: EncoderConfig | Mapping[str, Any] | None = None,
                 keys: tuple[str, ...] | None = None) -> None:
        if not isinstance(venv.observation_space, spaces.Dict):
            raise TypeError(f"EncodedVecEnv needs a Dict observation space, got {type(venv.observation_space).__name__}")
        self.device = resolve_device(device)
        self.encoder = (encoder or load_encoder(venv.observation_space, pretrained, config, keys)).to(self.device)
        self.encoder.eval().requires_grad_(False)
        self.keys = self.encoder.keys
        obs_space = spaces.Box(-np.inf, np.inf, (self.encoder.features_dim,), np.float32)
        super().__init__(venv, observation_space=obs_space)

    @torch.no_grad()
    def encode(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Encode a batch ``{key: (B, ...)}`` -> ``(B, features_dim)`` float32."""
        feats = self.encoder(obs_to_tensors(obs, self.keys, self.device))
        return feats.float().cpu().numpy()

    def _encode_one(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.encode({k: np.asarray(obs[k])[None] for k in self.keys})[0]

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self.reset_infos = self.venv.reset_infos  # the wrapped envs' reset infos (imitation reads its labels there)
        return self.encode(obs)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.reset_infos = self.venv.reset_infos
        for info in infos:
            term = info.get("terminal_observation")
            if isinstance(term, dict):
                info["terminal_observation"] = self._encode_one(term)
        return self.encode(obs), rewards, dones, infos


def attach_encoder(model: Any, observation_space: spaces.Dict, pretrained: str | Path | None = "lane-keep") -> Any:
    """Put the frozen encoder back in front of a model trained on :class:`EncodedVecEnv` embeddings.

    ``model`` is an SB3 model (PPO, SAC, TD3...) with an ``MlpPolicy`` over ``Box(features_dim,)``. Returns the
    same model object with a ``MultiInputPolicy`` over the raw Dict ``observation_space`` whose features
    extractor is a frozen :class:`PerceptionExtractor` holding the same encoder weights, and whose heads
    carry the trained weights. ``model.predict`` then takes raw observations, and the whole policy is one
    differentiable torch module (for attacks and attribution). Raises ``ValueError`` if the encoder's
    feature size does not match the trained heads.
    """
    policy = model.policy
    cls = model.policy_aliases.get("MultiInputPolicy")
    if cls is None:
        raise ValueError(f"{type(model).__name__} has no MultiInputPolicy; cannot attach an encoder")
    kwargs = dict(model.policy_kwargs)
    kwargs["features_extractor_class"] = PerceptionExtractor
    kwargs["features_extractor_kwargs"] = {"pretrained": pretrained, "freeze": True}
    new = cls(observation_space, model.action_space, model.lr_schedule, **kwargs)
    trained = policy.state_dict()
    target = new.state_dict()
    heads = {k: v for k, v in trained.items() if "features_extractor" not in k}
    for k, v in heads.items():
        if k not in target or target[k].shape != v.shape:
            have = tuple(target[k].shape) if k in target else "missing"
            raise ValueError(
                f"cannot attach encoder {pretrained!r}: trained head {k} has shape {tuple(v.shape)}, "
                f"the encoder-fronted policy has {have}"
            )
    missing = [k for k in target if k not in heads and "features_extractor" not in k]
    if missing:
        raise ValueError(f"cannot attach encoder {pretrained!r}: no trained weights for {missing}")
    new.load_state_dict(heads, strict=False)
    new.set_training_mode(False)
    new.to(policy.device)
    model.policy = new
    model.observation_space = observation_space
    if hasattr(model, "_create_aliases"):  # off-policy algorithms keep aliases to the policy's parts
        model._create_aliases()
    return model


class ShiftCombinedExtractor(CombinedExtractor):
    """SB3's ``CombinedExtractor`` (NatureCNN per image key, flatten for the rest) with DrQ's random-shift
    augmentation of every image during gradient updates (RAD/DrQ: replicate-pad ``pad`` pixels, crop back at
    a random offset per sample). Rollouts (``policy.set_training_mode(False)``) see unshifted images.
    The "scratch + random shift" baseline of docs/perception.md; recipe name ``combined_shift``."""

    def __init__(self, observation_space: spaces.Dict, cnn_output_dim: int = 256, normalized_image: bool = False,
                 pad: int = 4) -> None:
        super().__init__(observation_space, cnn_output_dim=cnn_output_dim, normalized_image=normalized_image)
        self.pad = int(pad)
        self.image_keys = {
            k for k, sub in observation_space.spaces.items() if is_image_space(sub, normalized_image=normalized_image)
        }

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.training and self.pad > 0:
            observations = {
                k: random_shift(v.float(), self.pad) if k in self.image_keys else v for k, v in observations.items()
            }
        return super().forward(observations)
