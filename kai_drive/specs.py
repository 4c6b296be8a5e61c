"""Typed, validated environment specs.

An env is defined by one YAML file in ``envs/`` (see :mod:`kai_drive.catalog`). The file is read with
``yaml.safe_load``, merged with the caller's overrides (``gymnasium.make(id, config={...})``) and
validated by the pydantic models below. Unknown keys and bad values raise :class:`SpecError`, whose
message names the file and the dotted key, e.g. ``envs/lane-keep.yaml: sensors.camera.width: ...``.

Each task's spec (the ``task:`` section) lives beside its code and is found through the task registry
(:mod:`kai_drive.tasks.base`); the base model, :class:`SpecError` and YAML reading are in
:mod:`kai_drive.config`.

Units are SI throughout (m, s, m/s, rad); field names carry the unit where it is not obvious.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from kai_drive.config import SpecError, FrozenModel, deep_merge, dotted_to_nested, format_validation_error, read_yaml
from kai_drive.sim.scenario import ScenarioSpec
from kai_drive.tasks import REGISTRY, LaneKeepTaskSpec


# ---------------------------------------------------------------------------------------------
# world, road, vehicle
# ---------------------------------------------------------------------------------------------
class WorldSpec(FrozenModel):
    physics_hz: int = Field(240, ge=60, le=2000, description="fixed physics step rate, Hz")
    control_hz: int = Field(20, ge=1, le=240, description="agent control rate, Hz")
    gravity_mps2: float = 9.81
    renderer: Literal["auto", "tiny", "egl"] = "auto"

    @model_validator(mode="after")
    def _divides(self) -> "WorldSpec":
        if self.physics_hz % self.control_hz:
            raise ValueError(
                f"physics_hz ({self.physics_hz}) must be a multiple of control_hz ({self.control_hz})"
            )
        return self


class RoadSpec(FrozenModel):
    length_m: tuple[float, float] = Field((200.0, 260.0), description="route length range, m")
    max_curvature: float = Field(1 / 45, gt=0, le=0.2, description="largest curvature, 1/m")
    min_straight_m: float = Field(15.0, ge=0)
    n_lanes: int = Field(2, ge=1, le=3)
    lane_width_m: float = Field(3.5, ge=2.5, le=5.0)
    shoulder_m: float = Field(0.5, ge=0.0, le=5.0)
    edge: Literal["barrier", "curb"] = "barrier"

    @model_validator(mode="after")
    def _range(self) -> "RoadSpec":
        lo, hi = self.length_m
        if not 50.0 <= lo <= hi <= 5000.0:
            raise ValueError(f"length_m must be [low, high] with 50 <= low <= high <= 5000, got {self.length_m}")
        return self


class VehicleSpec(FrozenModel):
    mass_kg: float = Field(1500.0, gt=100, le=5000)
    max_steer_rad: float = Field(0.6, gt=0, le=1.0)
    max_steer_rate_radps: float = Field(1.0, gt=0, le=10.0)
    max_speed_mps: float = Field(35.0, gt=0, le=60.0)
    color: tuple[float, float, float, float] = (0.1, 0.3, 0.8, 1.0)


# ---------------------------------------------------------------------------------------------
# sensors
# ---------------------------------------------------------------------------------------------
class CameraSpec(FrozenModel):
    enabled: bool = True
    width: int = Field(64, ge=8, le=1024)
    height: int = Field(64, ge=8, le=1024)
    fov_deg: float = Field(80.0, gt=10, lt=170, description="vertical field of view")
    position_m: tuple[float, float, float] = Field((2.0, 0.0, 1.4), description="in the car frame (x fwd from the centre, y left, z above the ground)")
    pitch_deg: float = Field(-10.0, ge=-89, le=89, description="negative looks down")
    yaw_deg: float = Field(0.0, ge=-180, le=180, description="0 looks along the mount's x axis, + turns left")
    near_m: float = Field(0.1, gt=0)
    far_m: float = Field(80.0, gt=1)
    depth: bool = False
    segmentation: bool = False
    noise_std: float = Field(0.0, ge=0, description="Gaussian pixel noise, std in 0..255 units")
    dropout: float = Field(0.0, ge=0, le=1, description="probability a frame is black")


class LidarSpec(FrozenModel):
    enabled: bool = True
    beams: int = Field(64, ge=1, le=4096)
    fov_deg: float = Field(360.0, gt=0, le=360)
    range_m: float = Field(40.0, gt=0.5, le=300)
    height_m: float = Field(0.5, gt=0.05, le=3.0, description="mount height above the car's base")
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise on normalised range")
    dropout: float = Field(0.0, ge=0, le=1, description="probability a beam returns no hit (1.0)")


class StateSpec(FrozenModel):
    enabled: bool = True
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise, in each quantity's own unit")


class SensorsSpec(FrozenModel):
    camera: CameraSpec = CameraSpec()
    lidar: LidarSpec = LidarSpec()
    state: StateSpec = StateSpec()


class RenderSpec(FrozenModel):
    width: int = Field(320, ge=16, le=2048)
    height: int = Field(240, ge=16, le=2048)
    distance_m: float = Field(9.0, gt=0)
    height_m: float = Field(3.5, gt=0)


class EnvSpec(FrozenModel):
    """Everything that defines one catalogue env (one YAML file in envs/)."""

    id: str = Field(..., pattern=r"^KaiDrive/[A-Za-z0-9]+-v\d+$")
    description: str = ""
    max_episode_steps: int | None = Field(None, ge=1, description="gymnasium TimeLimit; None = the task's own limit")
    world: WorldSpec = WorldSpec()
    road: RoadSpec = RoadSpec()  # driving tasks
    vehicle: VehicleSpec = VehicleSpec()  # driving tasks
    sensors: SensorsSpec = SensorsSpec()
    task: Any = Field(default_factory=LaneKeepTaskSpec, description="validated by the spec model of REGISTRY[task.kind]")
    render: RenderSpec = RenderSpec()
    scenario: ScenarioSpec = Field(default_factory=ScenarioSpec, description="scenario factor distributions (driving tasks)")

    @field_validator("task", mode="before")
    @classmethod
    def _task_by_kind(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value
        if not isinstance(value, Mapping):
            raise ValueError("must be a mapping with a 'kind' key")
        kind = value.get("kind", "lane_keep")
        if kind not in REGISTRY:
            raise ValueError(f"kind: unknown task kind {kind!r}; known: {sorted(REGISTRY)}")
        return REGISTRY[kind].spec_model.model_validate(dict(value))

    @model_validator(mode="after")
    def _lane_exists(self) -> "EnvSpec":
        lane = getattr(self.task, "ego_lane", None)
        if lane is not None and lane >= self.road.n_lanes:
            raise ValueError(f"task.ego_lane={lane} but the road has {self.road.n_lanes} lane(s)")
        return self


# ---------------------------------------------------------------------------------------------
# loading and overrides
# ---------------------------------------------------------------------------------------------
def validate_env_spec(data: Mapping[str, Any], source: str) -> EnvSpec:
    try:
        return EnvSpec.model_validate(dict(data))
    except ValidationError as err:
        raise SpecError(format_validation_error(source, err)) from None


def load_env_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> EnvSpec:
    """Read an env YAML, apply ``overrides`` (nested dict or dotted keys) and validate.

    Errors name the file for keys of the file and ``config`` for keys that came from the caller.
    """
    data = read_yaml(path)
    base = validate_env_spec(data, str(path))  # a broken catalogue file is blamed on the file
    if not overrides:
        return base
    if not isinstance(overrides, Mapping):
        raise SpecError(f"config must be a dict, got {type(overrides).__name__}")
    nested = dotted_to_nested({k: v for k, v in overrides.items() if "." in k})
    nested = deep_merge({k: v for k, v in overrides.items() if "." not in k}, nested)
    if "id" in nested and nested["id"] != base.id:
        raise SpecError(f"config: id: cannot be overridden (the env is {base.id})")
    merged = deep_merge(base.model_dump(mode="python"), nested)
    return validate_env_spec(merged, f"config (overrides of {path.name})")
