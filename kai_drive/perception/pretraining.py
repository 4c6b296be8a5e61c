"""Self-supervised pretraining of the multi-modal encoder: the ATC-style objective and its trainer.

The recipe is :mod:`kai_drive.perception.pretrain_recipe`, the data :mod:`kai_drive.perception.pretrain_data`,
the run folder (``python -m kai_drive.pretrain``) :mod:`kai_drive.perception.pretrain_run`.

Objective (no labels):

* temporal contrast (ATC, Stooke et al. 2021): anchor frame t (random-shift augmented) vs positive
  frame t+k (k in 1..k_max, same episode) through a momentum (EMA) target encoder; bilinear InfoNCE over
  the batch. Applied to the camera features, the lidar features and the fused features.
* cross-modal contrast: camera and lidar features of the same instant agree (symmetric InfoNCE, CLIP-style).
* optional, off by default: ``aux_privileged_weight`` > 0 adds a regression of lateral offset and
  heading error from the fused features (privileged labels; named so nobody mistakes it for SSL).

Privileged labels are otherwise only stored for the linear probes (:mod:`kai_drive.perception.probes`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kai_drive.perception.encoders import MultiModalEncoder
from kai_drive.perception.pretrain_recipe import TrainRecipe


def random_shift(img: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift: replicate-pad ``pad`` pixels, crop back at a random offset per sample.

    ``img``: float (B, C, H, W). Returns the same shape.
    """
    if pad <= 0:
        return img
    b, _, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad), mode="replicate")
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").to(img.device)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device="cpu").to(img.device)
    rows = (oy[:, None] + torch.arange(h, device=img.device)[None])  # (B, H)
    cols = (ox[:, None] + torch.arange(w, device=img.device)[None])  # (B, W)
    bi = torch.arange(b, device=img.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class _ATCHead(nn.Module):
    """ATC's compressor (linear + LayerNorm), residual predictor (anchor side) and bilinear W."""

    def __init__(self, dim: int, z: int) -> None:
        super().__init__()
        self.compress = nn.Sequential(nn.Linear(dim, z), nn.LayerNorm(z))
        self.predict = nn.Sequential(nn.Linear(z, 2 * z), nn.ReLU(), nn.Linear(2 * z, z))
        self.W = nn.Parameter(torch.eye(z) + 0.01 * torch.randn(z, z))


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the diagonal as the positive class (logits (B, B))."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits - logits.max(dim=1, keepdim=True).values.detach(), labels)


class Pretrainer:
    """Holds the online encoder, the EMA target, the heads and the optimiser; ``step(batch)`` trains once."""

    def __init__(self, encoder: MultiModalEncoder, t: TrainRecipe, device: torch.device, seed: int = 0) -> None:
        self.t, self.device = t, device
        self.encoder = encoder.to(device)
        z = t.latent_dim
        dims = dict(encoder.part_dims, fused=encoder.features_dim)
        self.terms = [m for m, w in (("camera", t.w_temporal_camera), ("lidar", t.w_temporal_lidar),
                                     ("fused", t.w_temporal_fused)) if w > 0 and m in dims]
        self.heads = nn.ModuleDict({m: _ATCHead(dims[m], z) for m in self.terms}).to(device)
        self.cross = None
        if t.w_cross_modal > 0 and "camera" in dims and "lidar" in dims:
            self.cross = nn.ModuleDict({"camera": nn.Linear(dims["camera"], z), "lidar": nn.Linear(dims["lidar"], z)}).to(device)
        self.aux = nn.Linear(encoder.features_dim, 2).to(device) if t.aux_privileged_weight > 0 else None
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_compress = nn.ModuleDict({m: copy.deepcopy(self.heads[m].compress) for m in self.terms}).requires_grad_(False)
        params = list(self.encoder.parameters()) + list(self.heads.parameters())
        params += list(self.cross.parameters()) if self.cross is not None else []
        params += list(self.aux.parameters()) if self.aux is not None else []
        self.optim = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        self.gen = torch.Generator().manual_seed(seed)
        self.iteration = 0

    # -- augmentation -------------------------------------------------------------------------------
    def _augment(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        t, out = self.t, dict(obs)
        if "camera" in obs:
            img = obs["camera"].float() / 255.0 if obs["camera"].dtype == torch.uint8 else obs["camera"]
            img = img.permute(0, 3, 1, 2)
            if "depth" in obs:
                img = torch.cat([img, obs["depth"].float().unsqueeze(1)], dim=1)  # shift depth with the image
            img = random_shift(img, t.pad, self.gen)
            img = self._photometric(img)
            if "depth" in obs:
                out["depth"] = img[:, -1]
                img = img[:, :-1]
            out["camera"] = img.permute(0, 2, 3, 1)
        if "lidar" in obs:
            r = obs["lidar"]
            noise = torch.randn(r.shape, generator=self.gen).to(r.device) * t.lidar_noise
            drop = (torch.rand(r.shape, generator=self.gen) < t.lidar_beam_dropout).to(r.device)
            out["lidar"] = torch.where(drop, torch.ones_like(r), (r + noise).clamp(0.0, 1.0))
        return out

    def _photometric(self, img: torch.Tensor) -> torch.Tensor:
        """Colour augmentation of float (B, C, H, W) images in [0, 1] (RGB = the first 3 channels; depth is left
        alone): brightness and per-channel gains in 1 +- ``color_jitter`` and, with chance ``channel_shuffle``, a
        random permutation of R, G, B. Both off (0) by default: then the image is returned unchanged."""
        t = self.t
        if t.color_jitter <= 0 and t.channel_shuffle <= 0:
            return img
        b = img.shape[0]
        rgb, rest = img[:, :3], img[:, 3:]
        if t.channel_shuffle > 0:
            perm = torch.stack([torch.randperm(3, generator=self.gen) for _ in range(b)])  # (B, 3)
            keep = torch.rand(b, generator=self.gen) >= t.channel_shuffle
            perm[keep] = torch.arange(3)
            rgb = torch.gather(rgb, 1, perm.to(img.device)[:, :, None, None].expand_as(rgb))
        if t.color_jitter > 0:
            j = t.color_jitter
            gain = 1.0 + (torch.rand(b, 3, generator=self.gen) * 2 - 1) * j
            gain = gain * (1.0 + (torch.rand(b, 1, generator=self.gen) * 2 - 1) * j)
            rgb = (rgb * gain.to(img.device)[:, :, None, None]).clamp(0.0, 1.0)
        return torch.cat([rgb, rest], dim=1)

    # -- one step -----------------------------------------------------------------------------------
    def losses(self, anchor: dict[str, torch.Tensor], positive: dict[str, torch.Tensor],
               labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Loss terms for a batch of (anchor, positive) observation dicts (camera uint8 BxHxWxC)."""
        t = self.t
        a, p = self._augment(anchor), self._augment(positive)
        parts = self.encoder.encode_parts(a)
        feats = dict(parts, fused=self.encoder.fuse(parts))
        with torch.no_grad():
            tparts = self.target_encoder.encode_parts(p)
            tfeats = dict(tparts, fused=self.target_encoder.fuse(tparts))
        out: dict[str, torch.Tensor] = {}
        weights = {"camera": t.w_temporal_camera, "lidar": t.w_temporal_lidar, "fused": t.w_temporal_fused}
        total = torch.zeros((), device=self.device)
        for m in self.terms:
            head = self.heads[m]
            za = head.compress(feats[m])
            za = za + head.predict(za)
            zt = self.target_compress[m](tfeats[m])
            loss = info_nce(za @ head.W @ zt.T)
            out[f"temporal_{m}"] = loss
            total = total + weights[m] * loss
        if self.cross is not None:
            zc = F.normalize(self.cross["camera"](parts["camera"]), dim=1)
            zl = F.normalize(self.cross["lidar"](parts["lidar"]), dim=1)
            logits = zc @ zl.T / t.temperature
            loss = 0.5 * (info_nce(logits) + info_nce(logits.T))
            out["cross_modal"] = loss
            total = total + t.w_cross_modal * loss
        if self.aux is not None and labels is not None:
            loss = F.mse_loss(self.aux(feats["fused"]), labels)
            out["aux_privileged"] = loss
            total = total + t.aux_privileged_weight * loss
        out["total"] = total
        return out

    def step(self, anchor, positive, labels=None) -> dict[str, float]:
        self.encoder.train()
        out = self.losses(anchor, positive, labels)
        self.optim.zero_grad(set_to_none=True)
        out["total"].backward()
        self.optim.step()
        self._ema()
        self.iteration += 1
        return {k: float(v.detach()) for k, v in out.items()}

    @torch.no_grad()
    def _ema(self) -> None:
        tau = self.t.ema
        pairs = [(self.encoder, self.target_encoder)] + [(self.heads[m].compress, self.target_compress[m]) for m in self.terms]
        for online, target in pairs:
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.lerp_(po, tau)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "encoder": self.encoder.state_dict(),
            "target_encoder": self.target_encoder.state_dict(),
            "heads": self.heads.state_dict(),
            "target_compress": self.target_compress.state_dict(),
            "cross": self.cross.state_dict() if self.cross is not None else {},
            "aux": self.aux.state_dict() if self.aux is not None else {},
            "optim": self.optim.state_dict(),
            "generator": self.gen.get_state(),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.iteration = int(s["iteration"])
        self.encoder.load_state_dict(s["encoder"])
        self.target_encoder.load_state_dict(s["target_encoder"])
        self.heads.load_state_dict(s["heads"])
        self.target_compress.load_state_dict(s["target_compress"])
        if self.cross is not None:
            self.cross.load_state_dict(s["cross"])
        if self.aux is not None:
            self.aux.load_state_dict(s["aux"])
        self.optim.load_state_dict(s["optim"])
        self.gen.set_state(s["generator"])


class PairSampler:
    """Draws (anchor t, positive t+k) index pairs within episodes from arrays ``episode``."""

    def __init__(self, episode: np.ndarray, k_max: int, rng: np.random.Generator) -> None:
        episode = np.asarray(episode)
        n = len(episode)
        # last index of each frame's episode (frames of an episode are contiguous)
        change = np.flatnonzero(np.diff(episode) != 0)
        ends = np.append(change, n - 1)
        self.ep_end = np.repeat(ends, np.diff(np.concatenate([[-1], ends])))
        self.valid = np.flatnonzero(self.ep_end - np.arange(n) >= 1)
        if len(self.valid) == 0:
            raise ValueError("no frame has a successor in its episode: collect longer episodes")
        self.k_max, self.rng = k_max, rng

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        i = self.valid[self.rng.integers(0, len(self.valid), batch)]
        room = np.minimum(self.ep_end[i] - i, self.k_max)
        k = 1 + (self.rng.random(batch) * room).astype(int)
        return i, i + k


def batch_from(data: dict[str, torch.Tensor], idx: np.ndarray, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    ii = torch.as_tensor(idx)
    return {k: data[k][ii] for k in keys}
