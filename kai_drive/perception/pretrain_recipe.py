"""The pretraining recipe (``configs/pretrain/<env>.yaml``): data collection, training objective, probes.

Read with ``yaml.safe_load`` and validated strictly (pydantic, ``extra="forbid"``): a mistyped key is an error
naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from kai_drive.catalog import catalog_dir, resolve_env
from kai_drive.config import StrictModel
from kai_drive.perception.encoders import EncoderConfig


class CollectRecipe(StrictModel):
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
    per_env_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="env alias -> config overrides merged over env_overrides for that env only (e.g. a "
                    "scenario.use list naming only the presets that env defines)")
    longitudinal: Literal["p_speed", "idm"] = Field(
        "p_speed", description="throttle: p_speed = P-control to the episode's target speed (no traffic); idm = "
                               "privileged IDM toward it behind the nearest actor ahead (kai_drive.experts.driving)")
    randomize: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"sensors.camera.noise_std": (0.0, 6.0), "sensors.lidar.noise_std": (0.0, 0.01)},
        description="dotted config key -> uniform range, drawn per randomised env")
    probe_episodes: int = Field(8, ge=1, description="held-out probe episodes (clean sensors, other road seeds), "
                                                   "spread evenly over the envs")
    probe_max_steps: int | None = Field(None, ge=2, description="control steps per probe episode at most (default max_steps)")

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


class TrainRecipe(StrictModel):
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
    color_jitter: float = Field(0.0, ge=0, lt=1, description="augmentation: camera brightness and per-channel gains "
                                "drawn in 1 +- this, per sample (anchor and positive independently); 0 = off")
    channel_shuffle: float = Field(0.0, ge=0, le=1, description="augmentation: chance a sample's RGB channels are "
                                   "permuted at random; 0 = off")
    w_temporal_camera: float = Field(1.0, ge=0)
    w_temporal_lidar: float = Field(1.0, ge=0)
    w_temporal_fused: float = Field(1.0, ge=0)
    w_cross_modal: float = Field(1.0, ge=0)
    aux_privileged_weight: float = Field(0.0, ge=0, description="OFF by default: supervised lateral/heading head")
    log_every: int = Field(20, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch default)")


class ProbeRecipe(StrictModel):
    train_frames: int = Field(6000, ge=10, description="probe fit frames drawn from the training data")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="last episodes of the fit set choose the ridge penalty")
    compare: list[str] = Field(default_factory=list, description="other weights probed beside the new encoder and the "
                               "random init (shipped names such as lane-keep, or .pt paths)")
    shift_suite: str = Field("shift", description="evaluation suite (configs/eval/<name>.yaml) the shift conditions come from")
    shift_conditions: list[str] = Field(default_factory=list, description="robustness conditions of shift_suite whose "
                                        "`scenario:` is replayed on the held-out probe roads (same seeds, same driver)")
    lead_gap_env: str | None = Field(None, description="env alias whose frames score the lead-distance probe (lead_gap_m)")
    max_lead_gap_m: float = Field(40.0, gt=0, description="lead-distance probe: frames with a lead gap up to this (m; "
                                  "the lidar's range)")


class PretrainRecipe(StrictModel):
    env: str = Field("lane-keep", description="the env of a single-env recipe (ignored when envs is set, except that "
                                              "it must then be one of them)")
    envs: list[str] | None = Field(None, min_length=1, description="collect from these envs, episodes spread evenly "
                                   "(round robin); None = [env]")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                             description="weights / run name (default: the env alias); --ship writes weights/<name>.pt")
    seed: int = 0
    device: str = "auto"
    encoder: dict[str, Any] = Field(default_factory=dict, description="EncoderConfig fields")
    collect: CollectRecipe = CollectRecipe()
    train: TrainRecipe = TrainRecipe()
    probe: ProbeRecipe = ProbeRecipe()

    @model_validator(mode="after")
    def _encoder(self):
        EncoderConfig.from_dict(self.encoder)  # raises naming unknown keys
        aliases = self.env_aliases()  # raises naming an unknown env
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"envs: {self.envs} names an env twice")
        if self.envs is not None and "env" in self.model_fields_set and resolve_env(self.env)[1] not in aliases:
            raise ValueError(f"env: {self.env!r} is not one of envs {aliases}; drop `env:` or add it to `envs:`")
        for name, where in ((a, "collect.per_env_overrides") for a in self.collect.per_env_overrides):
            if resolve_env(name)[1] not in aliases:
                raise ValueError(f"{where}: {name!r} is not a collection env ({aliases})")
        if self.probe.lead_gap_env is not None and resolve_env(self.probe.lead_gap_env)[1] not in aliases:
            raise ValueError(f"probe.lead_gap_env: {self.probe.lead_gap_env!r} is not a collection env ({aliases})")
        return self

    def env_aliases(self) -> list[str]:
        """The collection envs' aliases (``envs``, or ``[env]``); ValueError naming an unknown one."""
        out = []
        for e in (self.envs if self.envs is not None else [self.env]):
            try:
                out.append(resolve_env(e)[1])
            except Exception as exc:
                raise ValueError(f"env {e!r}: {exc}") from None
        return out

    def run_name(self) -> str:
        """``name``, else the (first) env's alias: the run folder prefix and the shipped weights' name."""
        return self.name or self.env_aliases()[0]

    def overrides_for(self, alias: str) -> dict[str, Any]:
        """The collection config of env ``alias``: env_overrides, then its per_env_overrides entry on top."""
        out = dict(self.collect.env_overrides)
        for k, v in self.collect.per_env_overrides.items():
            if resolve_env(k)[1] == alias:
                out.update(v)
        return out


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


def default_recipe(env: str) -> Path:
    """``configs/pretrain/<name>.yaml`` when it exists (a multi-env recipe such as ``drive``), else
    ``configs/pretrain/<alias>.yaml`` of env ``env`` (FileNotFoundError when the env has none)."""
    named = catalog_dir("configs") / "pretrain" / f"{env}.yaml"
    if "/" not in env and named.is_file():
        return named
    alias = resolve_env(env)[1]
    path = catalog_dir("configs") / "pretrain" / f"{alias}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no pretraining recipe for env '{alias}' at {path}; pass --recipe PATH")
    return path
