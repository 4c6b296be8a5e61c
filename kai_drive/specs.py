"""Typed, validated environment specs.

An env is defined by one YAML file in ``envs/`` (see :mod:`kai_drive.catalog`). The file is read with
``yaml.safe_load``, merged with the caller's overrides (``gymnasium.make(id, config={...})``) and
validated by the pydantic models below. Unknown keys and bad values raise :class:`SpecError`, whose
message names the file and the dotted key, e.g. ``envs/lane-keep.yaml: sensors.camera.width: ...``.

Units are SI throughout (m, s, m/s, rad); field names carry the unit where it is not obvious.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kai_drive.sim.scenario import ScenarioSpec


class SpecError(ValueError):
    """A spec file or an override is invalid; the message names the source and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# world, road, vehicle
# ---------------------------------------------------------------------------------------------
class WorldSpec(_Strict):
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


class RoadSpec(_Strict):
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


class VehicleSpec(_Strict):
    mass_kg: float = Field(1500.0, gt=100, le=5000)
    max_steer_rad: float = Field(0.6, gt=0, le=1.0)
    max_steer_rate_radps: float = Field(1.0, gt=0, le=10.0)
    max_speed_mps: float = Field(35.0, gt=0, le=60.0)
    color: tuple[float, float, float, float] = (0.1, 0.3, 0.8, 1.0)


# ---------------------------------------------------------------------------------------------
# sensors
# ---------------------------------------------------------------------------------------------
class CameraSpec(_Strict):
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


class LidarSpec(_Strict):
    enabled: bool = True
    beams: int = Field(64, ge=1, le=4096)
    fov_deg: float = Field(360.0, gt=0, le=360)
    range_m: float = Field(40.0, gt=0.5, le=300)
    height_m: float = Field(0.5, gt=0.05, le=3.0, description="mount height above the car's base")
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise on normalised range")
    dropout: float = Field(0.0, ge=0, le=1, description="probability a beam returns no hit (1.0)")


class StateSpec(_Strict):
    enabled: bool = True
    noise_std: float = Field(0.0, ge=0, description="Gaussian noise, in each quantity's own unit")


class SensorsSpec(_Strict):
    camera: CameraSpec = CameraSpec()
    lidar: LidarSpec = LidarSpec()
    state: StateSpec = StateSpec()


# ---------------------------------------------------------------------------------------------
# task
# ---------------------------------------------------------------------------------------------
class RewardSpec(_Strict):
    progress: float = Field(0.1, description="per metre travelled along the lane")
    lateral: float = Field(0.3, description="times (lane offset / lane half free width)^2, per step")
    heading: float = Field(0.5, description="times heading error^2 (rad^2), per step")
    speed: float = Field(0.05, description="times (speed above target / target), per step")
    slow: float = Field(
        0.0, description="times (speed below target / target), per step; 0 = off. Training-time shaping "
        "against the 'stop trap' (standing still until the time limit)"
    )
    steer_rate: float = Field(0.05, description="times (steering change per step, in action units)^2")
    jerk: float = Field(0.0005, description="times longitudinal jerk^2 (m/s^3)^2, per step")
    collision: float = Field(10.0, description="terminal penalty")
    off_road: float = Field(10.0, description="terminal penalty")
    lane_invasion: float = Field(5.0, description="penalty when the body first crosses its lane edge")
    success: float = Field(5.0, description="bonus for completing the route")
    unsafe_ttc: float = Field(0.0, description="per step while time-to-collision < task.ttc_threshold_s (drive tasks)")


class LaneKeepTaskSpec(_Strict):
    kind: Literal["lane_keep"] = "lane_keep"
    ego_lane: int = Field(0, ge=0, description="0 = rightmost lane")
    start_s_m: float = Field(8.0, ge=0)
    finish_margin_m: float = Field(10.0, ge=0, description="route is complete this far before its end")
    start_speed_mps: tuple[float, float] = (6.0, 10.0)
    start_offset_m: float = Field(0.3, ge=0, description="random lateral start offset, +-")
    start_heading_rad: float = Field(0.05, ge=0, description="random start heading error, +-")
    target_speed_mps: float = Field(12.0, gt=0)
    time_limit_s: float = Field(45.0, gt=0)
    terminate_on_lane_invasion: bool = True
    reward: RewardSpec = RewardSpec()


class DriveTaskSpec(LaneKeepTaskSpec):
    """Driving in traffic: lane keeping's keys plus lane changes and a time-to-collision threshold."""

    kind: Literal["drive"] = "drive"
    lane_changes: bool = Field(False, description="lane = nearest lane; crossing lane lines neither ends nor fails the episode")
    ttc_threshold_s: float = Field(2.0, ge=0, description="reward.unsafe_ttc applies while ttc_s is below this")


#: task kind -> spec model of its ``task:`` section. A new task registers its model here
#: (``register_task_spec``) before its env YAMLs are loaded.
TASK_SPECS: dict[str, type[BaseModel]] = {"lane_keep": LaneKeepTaskSpec, "drive": DriveTaskSpec}

#: kept for backwards compatibility: the lane-keeping task's spec
TaskSpec = LaneKeepTaskSpec


def register_task_spec(kind: str, model: type[BaseModel]) -> None:
    """Make ``task: {kind: <kind>, ...}`` validate against ``model``."""
    TASK_SPECS[kind] = model


class RenderSpec(_Strict):
    width: int = Field(320, ge=16, le=2048)
    height: int = Field(240, ge=16, le=2048)
    distance_m: float = Field(9.0, gt=0)
    height_m: float = Field(3.5, gt=0)


class EnvSpec(_Strict):
    """Everything that defines one catalogue env (one YAML file in envs/)."""

    id: str = Field(..., pattern=r"^KaiDrive/[A-Za-z0-9]+-v\d+$")
    description: str = ""
    max_episode_steps: int | None = Field(None, ge=1, description="gymnasium TimeLimit; None = the task's own limit")
    world: WorldSpec = WorldSpec()
    road: RoadSpec = RoadSpec()  # driving tasks
    vehicle: VehicleSpec = VehicleSpec()  # driving tasks
    sensors: SensorsSpec = SensorsSpec()
    task: Any = Field(default_factory=LaneKeepTaskSpec, description="validated by TASK_SPECS[task.kind]")
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
        if kind not in TASK_SPECS:  # the built-in task modules register their specs when imported
            import kai_drive.tasks  # noqa: F401
        if kind not in TASK_SPECS:
            raise ValueError(f"kind: unknown task kind {kind!r}; known: {sorted(TASK_SPECS)}")
        return TASK_SPECS[kind].model_validate(dict(value))

    @model_validator(mode="after")
    def _lane_exists(self) -> "EnvSpec":
        lane = getattr(self.task, "ego_lane", None)
        if lane is not None and lane >= self.road.n_lanes:
            raise ValueError(f"task.ego_lane={lane} but the road has {self.road.n_lanes} lane(s)")
        return self


# ---------------------------------------------------------------------------------------------
# loading and overrides
# ---------------------------------------------------------------------------------------------
def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dotted_to_nested(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"sensors.camera.width": 96}`` -> ``{"sensors": {"camera": {"width": 96}}}``."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def format_validation_error(source: str, err: ValidationError,
                            unknown_hint: str = "see envs/*.yaml for the valid keys") -> str:
    """One line per error: ``source: dotted.key: message`` (an unknown key says so, with ``unknown_hint``)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (check the spelling; {unknown_hint})"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


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
