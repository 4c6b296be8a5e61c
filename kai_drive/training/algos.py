"""The one map of Stable-Baselines3 algorithms (name -> class), and the names a recipe may use for classes.

Names are plain data here; torch / SB3 classes are resolved by the functions (:func:`algorithm`,
:func:`activations`, ...) when a recipe is checked or trained, so reading the names (the CLIs' ``--help`` and
flag errors) does not import torch.

Training (``kai_drive.train --algo``) offers :data:`ALGOS`; loading a saved model (``evaluate --model``,
``play``, :func:`kai_drive.evaluation.adapters.load_model`) accepts every name of :data:`LOADABLE`, which
adds algorithms whose models SB3 can load but kai_drive's recipes do not train.
"""

from __future__ import annotations

from typing import Any

from kai_drive.experts.driving import IDMPurePursuit
from kai_drive.experts.grasp import ScriptedGraspPolicy

#: name -> (SB3 class name, trained by kai_drive.train, off-policy); the order is the order file names are
#: matched in (``load_model`` guesses the algorithm from the path)
_TABLE: dict[str, tuple[str, bool, bool]] = {
    "ppo": ("PPO", True, False),
    "sac": ("SAC", True, True),
    "td3": ("TD3", True, True),
    "a2c": ("A2C", False, False),
    "ddpg": ("DDPG", False, True),
}
#: what ``kai_drive.train --algo`` offers
ALGOS = tuple(name for name, (_, trained, _) in _TABLE.items() if trained)
#: what loading a saved model accepts
LOADABLE = tuple(_TABLE)
#: trained algorithms with a replay buffer (action noise, replay-buffer checkpoints; no imitation warm start)
OFF_POLICY = tuple(name for name in ALGOS if _TABLE[name][2])


def algorithm(name: str) -> Any:
    """The SB3 class of ``name`` (any of :data:`LOADABLE`); ``ValueError`` for another name."""
    import stable_baselines3 as sb3

    if name not in _TABLE:
        raise ValueError(f"unknown algo {name!r}; one of {sorted(_TABLE)}")
    return getattr(sb3, _TABLE[name][0])


def algorithms() -> dict[str, Any]:
    """``--algo`` name -> SB3 class, for the algorithms kai_drive.train offers."""
    return {name: algorithm(name) for name in ALGOS}


# ---------------------------------------------------------------------------------------------
# whitelists: names in YAML -> Python objects
# ---------------------------------------------------------------------------------------------
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu", "gelu", "silu", "selu")
OPTIMIZERS = ("adam", "adamw", "rmsprop")
#: ``perception`` = kai_drive.perception's camera/lidar/state encoders (docs/perception.md);
#: ``combined`` = SB3's default for Dict observations (NatureCNN + flatten); ``combined_shift`` = the same
#: with DrQ random-shift augmentation of images during updates; ``flatten`` = flatten all
EXTRACTORS = ("perception", "combined", "combined_shift", "flatten")


def activations() -> dict[str, Any]:
    from torch import nn

    return {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "selu": nn.SELU,
    }


def optimizers() -> dict[str, Any]:
    import torch

    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}


def extractors() -> dict[str, Any]:
    from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor

    from kai_drive.perception.sb3 import PerceptionExtractor, ShiftCombinedExtractor

    return {
        "perception": PerceptionExtractor,
        "combined": CombinedExtractor,
        "combined_shift": ShiftCombinedExtractor,
        "flatten": FlattenExtractor,
    }


#: ``imitation.expert`` name -> scripted expert class (:mod:`kai_drive.experts`); the class takes the env and
#: has ``act(obs)`` or ``__call__(obs)``, optionally ``reset()`` and ``acting() -> bool``
EXPERTS: dict[str, type] = {
    "scripted-grasp": ScriptedGraspPolicy,
    "idm-pure-pursuit": IDMPurePursuit,
}


def encoder_lr_scale(policy_kwargs: dict[str, Any]) -> float:
    """``features_extractor_kwargs.lr_scale`` of a ``perception`` extractor (1.0 when absent)."""
    if policy_kwargs.get("features_extractor_class") != "perception":
        return 1.0
    return float((policy_kwargs.get("features_extractor_kwargs") or {}).get("lr_scale", 1.0))
