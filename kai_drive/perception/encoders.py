"""Camera, lidar and state encoders and their fusion into one feature vector.

All modules are built from an observation space (``spaces.Dict``), never from an env:

* :class:`CameraEncoder` — a DrQ-v2-style stack of 4 conv layers of 32 channels (3x3, ReLU) with a
  linear + LayerNorm + tanh trunk; optionally (``camera_head: spatial_softmax``) a 1x1 conv to
  ``keypoints`` maps and a :class:`SpatialSoftmax` (expected x, y of each map) before the trunk. Input uint8 ``HxWxC`` (or float in [0, 1], either layout) ->
  float / 255; an optional depth image (metres) is an extra channel, scaled by ``1 / depth_scale_m``.
  The default strides (2, 2, 2, 1) are cheaper than DrQ-v2's (2, 1, 1, 1): 64x64 -> 5x5x32.
* :class:`LidarEncoder` — 1-D convolutions over the beams with *circular* padding (the scan wraps
  around at +-pi), then linear + LayerNorm + tanh.
* :class:`StateEncoder` — normalise with stored mean/std buffers, then a small MLP.
* Fusion: :class:`ConcatFusion` (late fusion: concat + MLP, default) or :class:`AttentionFusion`
  (one transformer layer over one token per modality, mean-pooled).

:class:`MultiModalEncoder` bundles them; ``encoder(obs) -> (B, features_dim)``; ``encoder.encode_parts``
also returns the per-modality features (used by pretraining and probes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from kai_drive.perception.spec import camera_channels_first, canonical_spec


@dataclass
class EncoderConfig:
    """Architecture hyper-parameters (stored in weights manifests; must match to load weights)."""

    camera_channels: int = 32
    camera_strides: tuple[int, ...] = (2, 2, 2, 1)
    camera_dim: int = 64
    camera_head: str = "flatten"  # "flatten" | "spatial_softmax" (keypoints, for localisation: grasping)
    keypoints: int = 32
    depth_scale_m: float = 20.0
    lidar_channels: tuple[int, ...] = (16, 32, 32)
    lidar_kernel: int = 5
    lidar_dim: int = 64
    state_hidden: int = 64
    state_dim: int = 32
    fusion: str = "concat"  # "concat" | "attention"
    features_dim: int = 128
    attention_dim: int = 64
    attention_heads: int = 4

    def __post_init__(self) -> None:
        self.camera_strides = tuple(int(s) for s in self.camera_strides)
        self.lidar_channels = tuple(int(c) for c in self.lidar_channels)
        if self.camera_head not in ("flatten", "spatial_softmax"):
            raise ValueError(f"EncoderConfig.camera_head must be 'flatten' or 'spatial_softmax', got {self.camera_head!r}")
        if self.fusion not in ("concat", "attention"):
            raise ValueError(f"EncoderConfig.fusion must be 'concat' or 'attention', got {self.fusion!r}")
        if self.lidar_kernel % 2 != 1:
            raise ValueError(f"EncoderConfig.lidar_kernel must be odd (circular 'same' padding), got {self.lidar_kernel}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["camera_strides"] = list(self.camera_strides)
        d["lidar_channels"] = list(self.lidar_channels)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "EncoderConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"EncoderConfig: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


def _trunk(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())


class CameraEncoder(nn.Module):
    """Conv stack over an image (+ optional depth channel) -> ``(B, out_dim)``."""

    def __init__(self, height: int, width: int, channels: int, cfg: EncoderConfig, depth: bool = False) -> None:
        super().__init__()
        self.in_channels = channels + (1 if depth else 0)
        self.depth = depth
        self.depth_scale_m = float(cfg.depth_scale_m)
        layers: list[nn.Module] = []
        c = self.in_channels
        for s in cfg.camera_strides:
            layers += [nn.Conv2d(c, cfg.camera_channels, 3, stride=s), nn.ReLU()]
            c = cfg.camera_channels
        self.keypoints: SpatialSoftmax | None = None
        if cfg.camera_head == "spatial_softmax":
            layers.append(nn.Conv2d(c, cfg.keypoints, 1))
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            out = self.convs(torch.zeros(1, self.in_channels, height, width))
        if out.numel() == 0:
            raise ValueError(f"camera image {height}x{width} is too small for strides {cfg.camera_strides}")
        n = out.numel()
        if cfg.camera_head == "spatial_softmax":
            self.keypoints = SpatialSoftmax(out.shape[-2], out.shape[-1])
            n = 2 * cfg.keypoints
        self.trunk = _trunk(n, cfg.camera_dim)
        self.out_dim = cfg.camera_dim

    def forward(self, image: torch.Tensor, depth: torch.Tensor | None = None) -> torch.Tensor:
        """``image``: float (B, C, H, W) in [0, 1]; ``depth``: (B, H, W) metres or None."""
        x = image
        if self.depth:
            if depth is None:
                raise ValueError("this camera encoder was built with a depth channel; pass obs['depth']")
            x = torch.cat([x, (depth.unsqueeze(1) / self.depth_scale_m).clamp(0.0, 1.0)], dim=1)
        x = self.convs(x - 0.5)
        if self.keypoints is not None:
            x = self.keypoints(x)
        return self.trunk(x.flatten(1))


class SpatialSoftmax(nn.Module):
    """Feature maps (B, K, H, W) -> K expected image coordinates (B, 2K) in [-1, 1] (soft arg-max with a
    learned temperature; Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies"): each
    channel becomes a keypoint, which is what a policy that must *locate* things (grasping) needs."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=1), persistent=False)  # (HW, 2)
        self.log_temperature = nn.Parameter(torch.zeros(1))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        b, k, h, w = maps.shape
        attn = torch.softmax(maps.reshape(b, k, h * w) / self.log_temperature.exp(), dim=-1)
        return (attn @ self.grid).reshape(b, 2 * k)


class LidarEncoder(nn.Module):
    """Circular 1-D conv over the beams (azimuth wraps around) -> ``(B, out_dim)``."""

    def __init__(self, beams: int, cfg: EncoderConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, n = 1, beams
        for i, ch in enumerate(cfg.lidar_channels):
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv1d(c, ch, cfg.lidar_kernel, stride=stride, padding=cfg.lidar_kernel // 2, padding_mode="circular"),
                nn.ReLU(),
            ]
            c = ch
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            n = self.convs(torch.zeros(1, 1, beams)).numel()
        self.trunk = _trunk(n, cfg.lidar_dim)
        self.out_dim = cfg.lidar_dim

    def forward(self, ranges: torch.Tensor) -> torch.Tensor:
        """``ranges``: (B, N) normalised ranges in [0, 1]."""
        return self.trunk(self.convs(ranges.unsqueeze(1) - 0.5).flatten(1))


class StateEncoder(nn.Module):
    """Standardise (buffers ``mean``/``std``, set from data by pretraining) then MLP -> ``(B, out_dim)``."""

    def __init__(self, dim: int, cfg: EncoderConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.net = nn.Sequential(nn.Linear(dim, cfg.state_hidden), nn.ReLU(), _trunk(cfg.state_hidden, cfg.state_dim))
        self.out_dim = cfg.state_dim

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net((state - self.mean) / self.std)


class ConcatFusion(nn.Module):
    """Late fusion: concatenate the modality features, then Linear-ReLU-Linear-LayerNorm."""

    def __init__(self, dims: Mapping[str, int], cfg: EncoderConfig) -> None:
        super().__init__()
        self.keys = tuple(dims)
        total = sum(dims.values())
        self.net = nn.Sequential(
            nn.Linear(total, cfg.features_dim), nn.ReLU(), nn.Linear(cfg.features_dim, cfg.features_dim),
            nn.LayerNorm(cfg.features_dim),
        )

    def forward(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat([parts[k] for k in self.keys], dim=1))


class AttentionFusion(nn.Module):
    """One token per modality (projected + learned modality embedding), one transformer layer, mean-pool."""

    def __init__(self, dims: Mapping[str, int], cfg: EncoderConfig) -> None:
        super().__init__()
        self.keys = tuple(dims)
        d = cfg.attention_dim
        self.proj = nn.ModuleDict({k: nn.Linear(v, d) for k, v in dims.items()})
        self.modality = nn.Parameter(torch.zeros(len(dims), d))
        nn.init.normal_(self.modality, std=0.02)
        self.layer = nn.TransformerEncoderLayer(d, cfg.attention_heads, dim_feedforward=2 * d, dropout=0.0,
                                                batch_first=True, norm_first=True)
        self.out = nn.Sequential(nn.Linear(d, cfg.features_dim), nn.LayerNorm(cfg.features_dim))

    def forward(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        tokens = torch.stack([self.proj[k](parts[k]) for k in self.keys], dim=1) + self.modality
        return self.out(self.layer(tokens).mean(dim=1))


class MultiModalEncoder(nn.Module):
    """Encoders for every known key of an observation space, fused into ``features_dim`` features.

    Args:
        observation_space: ``spaces.Dict`` with some of ``camera`` (uint8 HxWxC or CxHxW), ``depth``
            (HxW metres), ``lidar`` (N,), ``state`` (k,).
        config: an :class:`EncoderConfig` or a dict of its fields.
        keys: the keys to encode (default: every known key present).

    ``forward(obs)`` takes a dict of tensors with a leading batch dim. The camera may be uint8 (divided
    by 255 here) or float already in [0, 1] (SB3's preprocessing), in the layout of the space the
    encoder was built from.
    """

    def __init__(self, observation_space: spaces.Dict, config: EncoderConfig | Mapping[str, Any] | None = None,
                 keys: tuple[str, ...] | None = None) -> None:
        super().__init__()
        self.config = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(config)
        self.spec = canonical_spec(observation_space, keys)
        self.keys = tuple(self.spec)
        self.camera_channels_first = "camera" in self.spec and camera_channels_first(
            tuple(observation_space.spaces["camera"].shape))
        cfg = self.config
        self.encoders = nn.ModuleDict()
        if "camera" in self.spec:
            h, w, c = self.spec["camera"]["shape"]
            self.encoders["camera"] = CameraEncoder(h, w, c, cfg, depth="depth" in self.spec)
        if "lidar" in self.spec:
            self.encoders["lidar"] = LidarEncoder(self.spec["lidar"]["shape"][0], cfg)
        if "state" in self.spec:
            self.encoders["state"] = StateEncoder(self.spec["state"]["shape"][0], cfg)
        dims = {k: m.out_dim for k, m in self.encoders.items()}
        self.fusion = ConcatFusion(dims, cfg) if cfg.fusion == "concat" else AttentionFusion(dims, cfg)
        self.features_dim = cfg.features_dim
        self.part_dims = dims

    # -- inputs -----------------------------------------------------------------------------------
    def _camera(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        img = obs["camera"]
        if img.dim() == 3:
            raise ValueError(f"obs['camera'] needs a leading batch dim, got shape {tuple(img.shape)}")
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        else:
            img = img.float()
        if not self.camera_channels_first:
            img = img.permute(0, 3, 1, 2)
        return img

    def _depth(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        if "depth" not in self.spec:
            return None
        d = obs["depth"].float()
        if d.dim() == 4:  # (B, 1, H, W) or (B, H, W, 1)
            d = d.squeeze(1) if d.shape[1] == 1 else d.squeeze(-1)
        return d

    def encode_parts(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality features ``{key: (B, dim)}`` (no fusion)."""
        parts: dict[str, torch.Tensor] = {}
        if "camera" in self.encoders:
            parts["camera"] = self.encoders["camera"](self._camera(obs), self._depth(obs))
        if "lidar" in self.encoders:
            parts["lidar"] = self.encoders["lidar"](obs["lidar"].float())
        if "state" in self.encoders:
            parts["state"] = self.encoders["state"](obs["state"].float())
        return parts

    def fuse(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion(parts)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.fusion(self.encode_parts(obs))

    def set_state_normalisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Store the state standardisation (per-dim mean and std) used by the state encoder."""
        if "state" not in self.encoders:
            return
        enc = self.encoders["state"]
        enc.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        enc.std.copy_(torch.as_tensor(np.maximum(std, 1e-3), dtype=torch.float32))


def obs_to_tensors(obs: Mapping[str, Any], keys: tuple[str, ...], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Numpy batch dict -> tensors on ``device`` (uint8 stays uint8: 4x less to copy to a GPU)."""
    return {k: torch.as_tensor(np.asarray(obs[k])).to(device, non_blocking=True) for k in keys}


__all__ = [
    "EncoderConfig", "CameraEncoder", "LidarEncoder", "StateEncoder", "ConcatFusion", "AttentionFusion",
    "MultiModalEncoder", "obs_to_tensors",
]
