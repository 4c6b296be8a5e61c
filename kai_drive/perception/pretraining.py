"""Self-supervised pretraining of the multi-modal encoder: data collection + ATC-style training.

Data: a scripted lane follower (privileged P-controller, :func:`kai_drive.snapshot.lane_follower`'s
law) with perturbations — a wandering lateral set-point, steering noise and steering bursts, a random
target speed per episode — so the frames cover off-centre and misaligned states. Domain randomisation
is done through env config overrides drawn per collection env (camera/lidar noise, camera pitch...);
colour and light randomisation do not exist in the env yet.

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
import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn import functional as F

from kai_drive.perception.encoders import EncoderConfig, MultiModalEncoder

log = logging.getLogger(__name__)

#: road seeds of the held-out probe roads (never drawn by collection, which uses [0, 2**30))
PROBE_ROAD_SEED_BASE = 2**30 + 2**29 + 2**28
LABELS = ("lateral_offset_m", "heading_error_rad", "edge_distance_m", "speed_mps")


# ---------------------------------------------------------------------------------------------
# recipe
# ---------------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectRecipe(_Strict):
    episodes: int = Field(40, ge=1, description="training episodes (road seeds drawn in [0, 2**30))")
    max_steps: int = Field(300, ge=2, description="control steps per episode at most")
    randomized_envs: int = Field(8, ge=1, description="distinct domain-randomised env configs (episodes spread over them)")
    speed_mps: tuple[float, float] = Field((5.0, 14.0), description="target speed drawn per episode")
    target_offset_m: float = Field(1.0, ge=0, description="the driver tracks a wandering lateral set-point in +- this")
    setpoint_steps: tuple[int, int] = Field((20, 60), description="steps between new lateral set-points")
    steer_noise: float = Field(0.05, ge=0, description="Gaussian noise on the steering command, action units")
    burst_prob: float = Field(0.03, ge=0, le=1, description="per-step chance a steering burst starts")
    burst_steer: float = Field(0.35, ge=0, le=1, description="burst steering offset drawn in +- this")
    burst_steps: tuple[int, int] = Field((4, 12), description="burst length range, steps")
    env_overrides: dict[str, Any] = Field(default_factory=lambda: {"task.terminate_on_lane_invasion": False},
                                          description="config overrides of every collection env")
    randomize: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"sensors.camera.noise_std": (0.0, 6.0), "sensors.lidar.noise_std": (0.0, 0.01)},
        description="dotted config key -> uniform range, drawn per randomised env")
    probe_episodes: int = Field(8, ge=1, description="held-out probe episodes (clean sensors, other road seeds)")

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("speed_mps", "setpoint_steps", "burst_steps"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        for key, (lo, hi) in self.randomize.items():
            if lo > hi:
                raise ValueError(f"randomize.{key}: low {lo} > high {hi}")
        return self


class TrainRecipe(_Strict):
    iterations: int = Field(2000, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    k_max: int = Field(3, ge=1, description="positive = frame t+k, k in 1..k_max")
    pad: int = Field(4, ge=0, description="random shift: pad (replicate) then random crop back")
    temperature: float = Field(0.1, gt=0, description="cross-modal InfoNCE temperature")
    ema: float = Field(0.01, gt=0, le=1, description="target <- (1-ema) target + ema online, per step")
    latent_dim: int = Field(64, ge=4)
    lidar_noise: float = Field(0.01, ge=0, description="augmentation: Gaussian noise on lidar ranges")
    lidar_beam_dropout: float = Field(0.02, ge=0, le=1, description="augmentation: beams set to 1.0 (no hit)")
    w_temporal_camera: float = Field(1.0, ge=0)
    w_temporal_lidar: float = Field(1.0, ge=0)
    w_temporal_fused: float = Field(1.0, ge=0)
    w_cross_modal: float = Field(1.0, ge=0)
    aux_privileged_weight: float = Field(0.0, ge=0, description="OFF by default: supervised lateral/heading head")
    log_every: int = Field(20, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch default)")


class ProbeRecipe(_Strict):
    train_frames: int = Field(6000, ge=10, description="probe fit frames drawn from the training data")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="last episodes of the fit set choose the ridge penalty")


class PretrainRecipe(_Strict):
    env: str = "lane-keep"
    seed: int = 0
    device: str = "auto"
    encoder: dict[str, Any] = Field(default_factory=dict, description="EncoderConfig fields")
    collect: CollectRecipe = CollectRecipe()
    train: TrainRecipe = TrainRecipe()
    probe: ProbeRecipe = ProbeRecipe()

    @model_validator(mode="after")
    def _encoder(self):
        EncoderConfig.from_dict(self.encoder)  # raises naming unknown keys
        return self


def load_recipe(path: str | Path) -> PretrainRecipe:
    """Read a recipe YAML (safe_load) and validate it; errors name the file and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    try:
        return PretrainRecipe.model_validate(data)
    except Exception as e:  # pydantic.ValidationError lists the keys
        raise ValueError(f"{path}: invalid pretraining recipe:\n{e}") from e


# ---------------------------------------------------------------------------------------------
# data collection
# ---------------------------------------------------------------------------------------------
class PerturbedDriver:
    """Privileged P-controller tracking a wandering lateral set-point, with noise and steering bursts."""

    def __init__(self, c: CollectRecipe, rng: np.random.Generator) -> None:
        self.c, self.rng = c, rng
        self.reset()

    def reset(self) -> None:
        c, rng = self.c, self.rng
        self.speed = float(rng.uniform(*c.speed_mps))
        self.setpoint, self.next_setpoint, self.burst_left, self.burst = 0.0, 0, 0, 0.0

    def act(self, info: dict) -> np.ndarray:
        c, rng = self.c, self.rng
        self.next_setpoint -= 1
        if self.next_setpoint <= 0:
            self.setpoint = float(rng.uniform(-c.target_offset_m, c.target_offset_m))
            self.next_setpoint = int(rng.integers(c.setpoint_steps[0], c.setpoint_steps[1] + 1))
        if self.burst_left <= 0 and rng.random() < c.burst_prob:
            self.burst_left = int(rng.integers(c.burst_steps[0], c.burst_steps[1] + 1))
            self.burst = float(rng.uniform(-c.burst_steer, c.burst_steer))
        err = info.get("lateral_offset_m", 0.0) - self.setpoint
        steer = -0.6 * err - 1.5 * info.get("heading_error_rad", 0.0) + rng.normal(0.0, c.steer_noise)
        if self.burst_left > 0:
            steer += self.burst
            self.burst_left -= 1
        throttle = float(np.clip(0.5 * (self.speed - info.get("speed_mps", 0.0)), -1.0, 1.0))
        return np.clip(np.array([steer, throttle], dtype=np.float32), -1.0, 1.0)


def _edge_distance(task, lateral_offset_m: float) -> float:
    """Distance (m) from the car's centre to the nearer edge body's inner face."""
    d_road = lateral_offset_m + task.lane_offset
    return float(task.layout.edge_offset_m - abs(d_road))


def collect(recipe: PretrainRecipe, episodes: int, road_seeds: list[int], randomize: bool,
            seed: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Drive ``episodes`` episodes; returns arrays: observation keys, labels, ``episode``, ``step``, and
    ``renderer`` (a 0-d string array: the renderer that made the images, "tiny", "egl" or "opengl")."""
    import gymnasium
    from tqdm import tqdm

    import kai_drive  # noqa: F401  (registers the envs)
    from kai_drive.catalog import resolve_env

    c = recipe.collect
    env_id, _ = resolve_env(recipe.env)
    rng = np.random.default_rng(seed)
    n_cfg = min(c.randomized_envs, episodes) if randomize else 1
    per_cfg = np.array_split(np.arange(episodes), n_cfg)
    buf: dict[str, list] = {}
    renderers: set[str] = set()
    bar = tqdm(total=episodes, desc="collect" + (" (randomised)" if randomize else " (probe roads)"),
               disable=not progress, unit="ep")
    for idxs in per_cfg:
        cfg = dict(c.env_overrides)
        if randomize:
            for key, (lo, hi) in c.randomize.items():
                cfg[key] = float(rng.uniform(lo, hi))
        env = gymnasium.make(env_id, config=cfg)
        renderers.add(str(env.unwrapped.renderer))
        task = env.unwrapped.task
        driver = PerturbedDriver(c, rng)
        for ep in idxs:
            obs, info = env.reset(seed=int(rng.integers(2**31 - 1)), options={"road_seed": int(road_seeds[ep])})
            driver.reset()
            for step in range(c.max_steps):
                for k, v in obs.items():
                    buf.setdefault(k, []).append(v)
                lat = float(info["lateral_offset_m"])
                labels = {"lateral_offset_m": lat, "heading_error_rad": float(info["heading_error_rad"]),
                          "edge_distance_m": _edge_distance(task, lat), "speed_mps": float(info["speed_mps"])}
                for k, v in labels.items():
                    buf.setdefault(k, []).append(v)
                buf.setdefault("episode", []).append(int(ep))
                buf.setdefault("step", []).append(step)
                obs, _, term, trunc, info = env.step(driver.act(info))
                if term or trunc:
                    break
            bar.update(1)
        env.close()
    bar.close()
    out = {}
    for k, v in buf.items():
        arr = np.stack(v) if isinstance(v[0], np.ndarray) else np.asarray(v)
        out[k] = arr.astype(np.float32) if k in LABELS else arr
    out["renderer"] = np.asarray("+".join(sorted(renderers)))
    return out


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
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


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def save_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temporary name, then ``os.replace``)."""
    from kai_drive.perception.weights import atomic_write

    text = json.dumps(obj, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))

