"""Pretrained weights: a ``state_dict`` file (``.pt``) next to a JSON manifest (``.json``).

Shipped weights live in ``kai_drive/perception/weights/<name>.pt`` + ``<name>.json`` and are named by
env alias (``"lane-keep"``). The manifest records the env, the observation spec (keys, shapes, dtypes,
camera channel-last), the encoder config, the recipe, the data size, the date, the probe scores and the
torch version. Weights load with ``torch.load(weights_only=True)``: tensors only, no pickled code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from gymnasium import spaces

from kai_drive.perception.encoders import EncoderConfig, MultiModalEncoder
from kai_drive.perception.spec import check_spec

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_DEVICE_LOGGED: set[str] = set()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu. The choice is logged (and printed) once per process."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch.cuda.is_available() is False; use device='auto' or 'cpu'")
    key = str(dev)
    if key not in _DEVICE_LOGGED:
        _DEVICE_LOGGED.add(key)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
        msg = f"kai_drive.perception: encoders run on {dev} ({name}; asked for {device!r})"
        log.info(msg)
        print(msg)
    return dev


def shipped_weights() -> list[str]:
    """Names of the weights shipped inside the package (``["lane-keep"]``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt") if p.with_suffix(".json").is_file())


def weights_paths(pretrained: str | Path) -> tuple[Path, Path]:
    """``(weights.pt, manifest.json)`` for a shipped name, a ``.pt`` path, or a folder holding ``encoder.pt``."""
    p = Path(pretrained)
    if isinstance(pretrained, str) and (WEIGHTS_DIR / f"{pretrained}.pt").is_file():
        p = WEIGHTS_DIR / f"{pretrained}.pt"
    elif p.is_dir():
        p = p / "encoder.pt"
    if not p.is_file():
        raise FileNotFoundError(
            f"pretrained weights {str(pretrained)!r} not found: not a shipped name ({shipped_weights()}) "
            "nor an existing .pt file / folder with encoder.pt; pass pretrained=None for random init"
        )
    m = p.with_suffix(".json")
    if not m.is_file():
        raise FileNotFoundError(f"{p}: its manifest {m.name} is missing (it holds the observation spec and encoder config)")
    return p, m


def read_manifest(pretrained: str | Path) -> dict[str, Any]:
    return json.loads(weights_paths(pretrained)[1].read_text())


def save_weights(encoder: MultiModalEncoder, path: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``path`` (.pt, a CPU state_dict) and its ``.json`` manifest (observation spec + config added)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    torch.save(state, path)
    full = dict(manifest)
    full["observation_spec"] = encoder.spec
    full["encoder_config"] = encoder.config.to_dict()
    full["features_dim"] = encoder.features_dim
    full["torch_version"] = torch.__version__
    path.with_suffix(".json").write_text(json.dumps(full, indent=2) + "\n")
    return path


def load_encoder(observation_space: spaces.Dict, pretrained: str | Path | None = None,
                 config: EncoderConfig | Mapping[str, Any] | None = None, keys: tuple[str, ...] | None = None,
                 ) -> MultiModalEncoder:
    """An encoder for ``observation_space``, random-init (``pretrained=None``) or with pretrained weights.

    With weights, the architecture comes from the manifest (``config`` must be None or equal) and the
    observation space must match the manifest's spec, else :class:`~kai_drive.perception.spec.SpecMismatchError`
    names the mismatch and what to do.
    """
    if pretrained is None:
        return MultiModalEncoder(observation_space, config, keys)
    wpath, _ = weights_paths(pretrained)
    manifest = read_manifest(pretrained)
    source = f"pretrained weights {str(pretrained)!r} ({wpath.name}, env {manifest.get('env', '?')})"
    expected = manifest["observation_spec"]
    if keys is not None and tuple(keys) != tuple(expected):
        raise ValueError(f"{source} encode keys {list(expected)}; keys={list(keys)} differs (leave keys=None)")
    check_spec(expected, observation_space, source)
    cfg = EncoderConfig.from_dict(manifest["encoder_config"])
    if config is not None:
        asked = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(config)
        if asked != cfg:
            raise ValueError(f"{source} were trained with encoder config {cfg}; config={asked} differs (leave it None)")
    encoder = MultiModalEncoder(observation_space, cfg, tuple(expected))
    state = torch.load(wpath, map_location="cpu", weights_only=True)
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: state_dict does not fit the encoder (missing {missing}, unexpected {unexpected})")
    return encoder
