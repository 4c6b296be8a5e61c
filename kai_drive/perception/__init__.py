"""Perception: camera / lidar / state encoders fused into one feature vector, for SB3 agents.

* :class:`MultiModalEncoder` — built from a ``spaces.Dict`` observation space (see :mod:`.encoders`).
* :class:`PerceptionExtractor` — SB3 features extractor (frozen or fine-tuned) (see :mod:`.sb3`).
* :class:`EncodedVecEnv` — VecEnv wrapper encoding all envs in one batch on cuda|cpu (see :mod:`.sb3`).
* :func:`load_encoder` — random init or shipped/pretrained weights, checked against the spec.
* pretraining: ``python -m kai_drive.pretrain``; probes: :mod:`.probes`; speed: ``python -m kai_drive.perception.bench``.

See docs/perception.md.
"""

from kai_drive.perception.encoders import EncoderConfig, MultiModalEncoder
from kai_drive.perception.sb3 import (
    EncodedVecEnv, PerceptionExtractor, ScaledLRAdam, ShiftCombinedExtractor, attach_encoder, check_lr_scales,
)
from kai_drive.perception.spec import SpecMismatchError, canonical_spec
from kai_drive.perception.weights import load_encoder, resolve_device, shipped_weights

__all__ = [
    "EncoderConfig", "MultiModalEncoder", "SpecMismatchError", "canonical_spec", "load_encoder", "resolve_device",
    "shipped_weights", "PerceptionExtractor", "EncodedVecEnv", "ShiftCombinedExtractor", "attach_encoder",
    "ScaledLRAdam", "check_lr_scales",
]
