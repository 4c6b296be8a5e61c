"""Observation specs as the encoders see them: which keys, which shapes, which dtypes.

Encoders are built from a ``gymnasium.spaces.Dict`` (never from an env). The camera may arrive
channel-last ``(H, W, C)`` (what kai-drive envs emit) or channel-first ``(C, H, W)`` (after SB3's
``VecTransposeImage``); :func:`canonical_spec` turns both into the channel-last form, which is what
weights manifests record and what :func:`check_spec` compares.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium import spaces

#: observation keys the encoders understand
KNOWN_KEYS = ("camera", "depth", "lidar", "state")
#: keys that are skipped silently (labels, not inputs)
SKIPPED_KEYS = ("segmentation",)


class SpecMismatchError(ValueError):
    """Weights (or an encoder) built for one observation spec, used with another."""


def camera_channels_first(shape: tuple[int, ...]) -> bool:
    """SB3's rule: an image is channel-first when its first dim is the smallest (C <= H, W)."""
    return len(shape) == 3 and shape[0] < shape[1] and shape[0] < shape[2]


def canonical_spec(observation_space: spaces.Space, keys: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """``{key: {"shape": [...], "dtype": "uint8"}}`` for the keys an encoder uses, camera channel-last.

    Args:
        observation_space: a ``spaces.Dict`` with some of ``camera`` (uint8 HxWxC or CxHxW),
            ``depth`` (HxW, metres), ``lidar`` (N,) and ``state`` (k,).
        keys: the keys to use; default every known key present. Unknown keys raise unless skipped
            (``segmentation`` is always skipped: it is a label, not an input).
    """
    if not isinstance(observation_space, spaces.Dict):
        raise TypeError(
            f"perception encoders need a spaces.Dict observation space, got {type(observation_space).__name__}; "
            "wrap a single image as {'camera': ...}"
        )
    present = tuple(observation_space.spaces)
    if keys is None:
        unknown = [k for k in present if k not in KNOWN_KEYS and k not in SKIPPED_KEYS]
        if unknown:
            raise ValueError(
                f"observation keys {unknown} are not known to the perception encoders (known: {KNOWN_KEYS}); "
                "pass keys=(...) to choose the ones to encode"
            )
        keys = tuple(k for k in KNOWN_KEYS if k in present)
    else:
        missing = [k for k in keys if k not in present]
        if missing:
            raise ValueError(f"keys {missing} are not in the observation space (it has {list(present)})")
        bad = [k for k in keys if k not in KNOWN_KEYS]
        if bad:
            raise ValueError(f"keys {bad} cannot be encoded; known keys: {KNOWN_KEYS}")
    if not keys:
        raise ValueError(f"no encodable key in the observation space (it has {list(present)}; known: {KNOWN_KEYS})")
    if "depth" in keys and "camera" not in keys:
        raise ValueError("'depth' is encoded as an extra camera channel, so it needs 'camera' too")
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        sp = observation_space.spaces[k]
        if not isinstance(sp, spaces.Box):
            raise TypeError(f"observation '{k}' must be a Box, got {type(sp).__name__}")
        shape = tuple(int(s) for s in sp.shape)
        if k == "camera":
            if len(shape) != 3:
                raise ValueError(f"observation 'camera' must be HxWxC or CxHxW, got shape {shape}")
            if camera_channels_first(shape):
                shape = (shape[1], shape[2], shape[0])
        elif k == "depth":
            if len(shape) == 3 and 1 in (shape[0], shape[-1]):
                shape = (shape[1], shape[2]) if shape[0] == 1 else (shape[0], shape[1])
            if len(shape) != 2:
                raise ValueError(f"observation 'depth' must be HxW (metres), got shape {tuple(sp.shape)}")
        elif len(shape) != 1:
            raise ValueError(f"observation '{k}' must be a 1-D vector, got shape {shape}")
        out[k] = {"shape": list(shape), "dtype": str(np.dtype(sp.dtype))}
    if "depth" in out and out["depth"]["shape"] != out["camera"]["shape"][:2]:
        raise ValueError(
            f"observation 'depth' {tuple(out['depth']['shape'])} must match the camera's HxW {tuple(out['camera']['shape'][:2])}"
        )
    return out


def check_spec(expected: Mapping[str, Any], observation_space: spaces.Space, source: str) -> None:
    """Raise :class:`SpecMismatchError` when ``observation_space`` differs from ``expected``.

    ``expected`` is a canonical spec (from a weights manifest); ``source`` names the weights in the
    message. Only the keys of ``expected`` are compared (extra keys in the space are fine when the
    caller chooses ``keys``).
    """
    if not isinstance(observation_space, spaces.Dict):
        raise SpecMismatchError(f"{source}: expects a spaces.Dict observation space, got {type(observation_space).__name__}")
    keys = tuple(expected)
    missing = [k for k in keys if k not in observation_space.spaces]
    if missing:
        raise SpecMismatchError(
            f"{source} was trained on observation keys {list(keys)} but the observation space lacks {missing}; "
            "enable those sensors, or use pretrained=None (random init) or weights pretrained for this spec "
            "(python -m kai_drive.pretrain)"
        )
    got = canonical_spec(observation_space, keys)
    problems = []
    for k in keys:
        want_shape, got_shape = tuple(expected[k]["shape"]), tuple(got[k]["shape"])
        if want_shape != got_shape:
            what = {
                "camera": "image HxWxC (set sensors.camera.width/height; frame stacking multiplies C)",
                "depth": "depth HxW",
                "lidar": "number of beams (sensors.lidar.beams)",
                "state": "state dimension",
            }[k]
            problems.append(f"'{k}' {what}: weights expect {want_shape}, observation space has {got_shape}")
        if expected[k].get("dtype") and expected[k]["dtype"] != got[k]["dtype"]:
            problems.append(f"'{k}' dtype: weights expect {expected[k]['dtype']}, observation space has {got[k]['dtype']}")
    if problems:
        raise SpecMismatchError(
            f"{source} does not match the observation space: " + "; ".join(problems)
            + ". Configure the env to match, pass pretrained=None for a random-init encoder, or pretrain weights "
            "for this spec with `python -m kai_drive.pretrain --recipe <your recipe>.yaml`"
        )
