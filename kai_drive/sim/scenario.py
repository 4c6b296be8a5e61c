"""Scenario factors as data: the typed record of one driving episode, and how it is drawn.

A :class:`Scenario` is a plain, JSON-serialisable record (pydantic) of every factor of an episode:
road, ego start, traffic, the lead vehicle's behaviour, static obstacles, crossing pedestrians,
light, surface and marking colours, distractor objects, sensor noise and the camera's pose jitter.
``info["scenario"]`` at
reset is ``Scenario.model_dump(mode="json")``; ``reset(options={"scenario": record_or_subset})`` sets
any subset of factors exactly, the rest drawn from the seed as usual.

Each factor is drawn from its OWN random stream (:func:`factor_rng`), a function of ``road_seed`` and
the factor's fixed index only, so overriding one factor never shifts the others: this is what makes
paired counterfactual rollouts possible. The road itself is drawn from ``default_rng(road_seed)``
(as before the scenario record existed, so lane-keep's roads per seed are unchanged).

:class:`ScenarioSpec` is the YAML ``scenario:`` section: the distributions. Every numeric entry is a
constant or a ``[low, high]`` range drawn uniformly per episode (domain randomisation), e.g.
``scenario: {light: {intensity: [0.6, 1.0]}}``. The defaults give an empty road in TinyRenderer's
default light: lane-keep's images are byte-identical to what they were before.

Training distributions (domain randomisation) are named *presets* of the same section,
``scenario.presets.<name>``: overlays of the entries above that apply only when named in
``scenario.use`` (e.g. a recipe's ``train_env_config: {scenario.use: [appearance, sensors]}``), so an
env's nominal distribution, and every evaluation, is untouched unless asked. :meth:`ScenarioSpec.effective`
is the distribution actually drawn from.

Units: m, s, m/s, m/s^2, rad (angles in the YAML are in degrees where the name says ``_deg``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from kai_drive.config import FrozenModel, deep_merge
from kai_drive.sim.road import DEFAULT_COLORS

__all__ = [
    "Scenario", "ScenarioSpec", "draw_factors", "factor_rng", "FACTOR_STREAMS",
    "TrafficCar", "Lead", "Obstacle", "Pedestrian", "Light", "Colors", "Distractor", "SensorNoise", "CameraPose",
    "light_angles_deg",
]

#: factor -> index of its random stream (append only: changing an index changes every episode)
FACTOR_STREAMS: dict[str, int] = {
    "ego": 1, "traffic": 2, "lead": 3, "obstacles": 4, "pedestrians": 5,
    "light": 6, "colors": 7, "distractors": 8, "sensor_noise": 9, "camera_pose": 10,
}

#: TinyRenderer's defaults (what getCameraImage uses when no light argument is given)
DEFAULT_LIGHT_DIRECTION = (-50.0, 30.0, 100.0)

Vec3 = tuple[float, float, float]
RGBA = tuple[float, float, float, float]


def factor_rng(road_seed: int, factor: str) -> np.random.Generator:
    """The independent random stream of ``factor`` in the scenario of ``road_seed``."""
    return np.random.default_rng([int(road_seed), FACTOR_STREAMS[factor]])


# ---------------------------------------------------------------------------------------------
# the record (what one episode IS)
# ---------------------------------------------------------------------------------------------
class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrafficCar(_Rec):
    """One NPC car driven by IDM (longitudinal) and MOBIL (lane changes, where the road has lanes)."""

    lane: int = Field(..., ge=0, description="start lane, 0 = rightmost")
    s_m: float = Field(..., description="start arc length along the route, m")
    speed_mps: float = Field(..., ge=0, description="start speed, m/s")
    desired_speed_mps: float = Field(..., gt=0, description="IDM desired speed, m/s")
    color: RGBA = (0.75, 0.15, 0.15, 1.0)


class Lead(_Rec):
    """The lead car in the ego's lane: cruises at ``speed_mps + amplitude * sin(2 pi t / period + phase)``
    and, from ``brake_at_s`` for ``brake_duration_s``, brakes at ``brake_decel_mps2`` (None: never)."""

    gap_m: float = Field(..., gt=0, description="start gap, bumper to bumper, m")
    speed_mps: float = Field(..., ge=0, description="mean cruise speed, m/s")
    speed_amplitude_mps: float = Field(0.0, ge=0)
    speed_period_s: float = Field(10.0, gt=0)
    speed_phase_rad: float = 0.0
    brake_at_s: float | None = Field(None, ge=0, description="episode time of the hard brake, s")
    brake_decel_mps2: float = Field(6.0, gt=0, description="deceleration of the hard brake, m/s^2 (positive)")
    brake_duration_s: float = Field(2.0, ge=0)
    max_accel_mps2: float = Field(2.0, gt=0, description="comfort acceleration/deceleration outside the brake, m/s^2")
    color: RGBA = (0.85, 0.55, 0.10, 1.0)


class Obstacle(_Rec):
    """A static box on (or next to) the road."""

    s_m: float
    d_m: float = Field(..., description="lateral offset of its centre from the road centre line, m, + left")
    size_m: Vec3 = (1.0, 1.0, 1.0)
    yaw_rad: float = 0.0
    color: RGBA = (0.55, 0.35, 0.20, 1.0)


class Pedestrian(_Rec):
    """A pedestrian waiting beside the road at ``s_m`` who crosses it (to the far side) at ``speed_mps``
    once the ego's front is within ``trigger_distance_m`` of it (or at ``start_time_s`` if set); it stops
    on the far side. ``start_d_m`` places it elsewhere (e.g. already on the road)."""

    s_m: float
    side: Literal[-1, 1] = Field(1, description="+1: starts on the left side, -1: on the right")
    speed_mps: float = Field(1.4, gt=0)
    trigger_distance_m: float = Field(30.0, ge=0)
    start_time_s: float | None = Field(None, ge=0)
    start_d_m: float | None = Field(None, description="start lateral offset, m (None: beside the road on `side`)")


class Light(_Rec):
    """TinyRenderer lighting (getCameraImage light* arguments); intensity scales the three coefficients."""

    direction: Vec3 = DEFAULT_LIGHT_DIRECTION
    color: Vec3 = (1.0, 1.0, 1.0)
    intensity: float = Field(1.0, ge=0)
    ambient: float = Field(0.6, ge=0)
    diffuse: float = Field(0.35, ge=0)
    specular: float = Field(0.05, ge=0)
    shadow: bool = False

    def camera_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``getCameraImage`` (TinyRenderer; ignored by the OpenGL/EGL renderer)."""
        k = self.intensity
        return {
            "lightDirection": list(self.direction),
            "lightColor": list(self.color),
            "lightDistance": 2.0,
            "lightAmbientCoeff": self.ambient * k,
            "lightDiffuseCoeff": self.diffuse * k,
            "lightSpecularCoeff": self.specular * k,
            "shadow": int(self.shadow),
        }


class Colors(_Rec):
    ground: RGBA = DEFAULT_COLORS["ground"]
    road: RGBA = DEFAULT_COLORS["road"]
    marking: RGBA = DEFAULT_COLORS["marking"]
    barrier: RGBA = DEFAULT_COLORS["barrier"]


class Distractor(_Rec):
    """A roadside box beyond the edge whose colour means nothing (kind "distractor")."""

    s_m: float
    side: Literal[-1, 1] = 1
    distance_m: float = Field(3.0, ge=0, description="from the outer face of the road edge to the box, m")
    size_m: float = Field(1.0, gt=0)
    color: RGBA = (0.5, 0.5, 0.5, 1.0)


class SensorNoise(_Rec):
    camera_noise_std: float = Field(0.0, ge=0, description="Gaussian pixel noise, 0..255 units")
    camera_dropout: float = Field(0.0, ge=0, le=1)
    lidar_noise_std: float = Field(0.0, ge=0, description="on normalised range")
    lidar_dropout: float = Field(0.0, ge=0, le=1)
    state_noise_std: float = Field(0.0, ge=0)


class CameraPose(_Rec):
    """Displacement of the camera from its mount in the ``sensors.camera`` section (small pose jitter,
    per episode), in the car frame: x forward, y left, z up. All zero (the default) is the mount as
    specified, bit for bit."""

    dx_m: float = Field(0.0, ge=-0.5, le=0.5)
    dy_m: float = Field(0.0, ge=-0.5, le=0.5)
    dz_m: float = Field(0.0, ge=-0.5, le=0.5)
    dpitch_rad: float = Field(0.0, ge=-0.35, le=0.35, description="+ looks up, rad")
    dyaw_rad: float = Field(0.0, ge=-0.35, le=0.35, description="+ turns left, rad")


class Scenario(_Rec):
    """Every factor of one driving episode. Top-level road/ego keys are flat (as before the record)."""

    road_seed: int = Field(..., description="seed of the road geometry and of every factor's stream")
    noise_seed: int = Field(..., description="seed of the sensor-noise generator")
    route_length_m: float = Field(..., ge=30.0)
    n_lanes: int = Field(..., ge=1, le=3)
    ego_lane: int = Field(..., ge=0)
    start_offset_m: float = Field(0.0, description="lateral start offset from the lane centre, m")
    start_heading_rad: float = 0.0
    start_speed_mps: float = Field(8.0, ge=0)
    traffic: list[TrafficCar] = []
    lead: Lead | None = None
    obstacles: list[Obstacle] = []
    pedestrians: list[Pedestrian] = []
    light: Light = Light()
    colors: Colors = Colors()
    distractors: list[Distractor] = []
    sensor_noise: SensorNoise = SensorNoise()
    camera_pose: CameraPose = CameraPose()

    @field_validator("ego_lane")
    @classmethod
    def _lane_ok(cls, v, info):
        n = info.data.get("n_lanes")
        if n is not None and v >= n:
            raise ValueError(f"ego_lane={v} but n_lanes={n}")
        return v


# ---------------------------------------------------------------------------------------------
# the spec (the YAML's scenario: section: distributions)
# ---------------------------------------------------------------------------------------------
Range = float | tuple[float, float]
IntRange = int | tuple[int, int]
ColorRange = RGBA | tuple[RGBA, RGBA]


def _check_range(v):
    if isinstance(v, tuple) and len(v) == 2 and not isinstance(v[0], tuple) and v[0] > v[1]:
        raise ValueError(f"range [low, high] needs low <= high, got {list(v)}")
    return v


class _RangeChecked(FrozenModel):
    @field_validator("*")
    @classmethod
    def _ranges(cls, v):
        return _check_range(v)


class TrafficSpec(_RangeChecked):
    count: IntRange = Field(0, description="NPC cars (IDM + MOBIL)")
    speed_mps: Range = Field((8.0, 12.0), description="desired (and start) speed of each car, m/s")
    spacing_m: Range = Field((20.0, 40.0), description="gap to the car ahead in the same lane at the start, m")
    behind_m: float = Field(40.0, ge=0, description="cars in other lanes start from this far behind the ego, m")


class LeadSpec(_RangeChecked):
    enabled: bool = False
    gap_m: Range = (15.0, 25.0)
    speed_mps: Range = (8.0, 12.0)
    speed_amplitude_mps: Range = (0.0, 2.0)
    speed_period_s: Range = (6.0, 12.0)
    brake_at_s: Range | None = Field((3.0, 15.0), description="time of the hard brake, s; null = never")
    brake_decel_mps2: Range = (3.0, 7.0)
    brake_duration_s: Range = (1.0, 3.0)


class ObstacleSpec(_RangeChecked):
    count: IntRange = 0
    s_ahead_m: Range = Field((40.0, 150.0), description="ahead of the ego's start, m")
    lateral_jitter_m: Range = Field(0.5, description="+- around a random lane centre, m")
    size_m: Range = (0.6, 1.2)


class PedestrianSpec(_RangeChecked):
    count: IntRange = 0
    s_ahead_m: Range = Field((40.0, 180.0), description="ahead of the ego's start, m")
    speed_mps: Range = (1.0, 1.8)
    trigger_distance_m: Range = (25.0, 40.0)


class LightSpec(_RangeChecked):
    azimuth_deg: Range | None = Field(None, description="None: TinyRenderer's default direction")
    elevation_deg: Range | None = None
    color: tuple[Range, Range, Range] = (1.0, 1.0, 1.0)
    intensity: Range = 1.0
    ambient: Range = 0.6
    diffuse: Range = 0.35
    specular: Range = 0.05
    shadow: bool = False


class ColorsSpec(FrozenModel):
    ground: ColorRange = DEFAULT_COLORS["ground"]
    road: ColorRange = DEFAULT_COLORS["road"]
    marking: ColorRange = DEFAULT_COLORS["marking"]
    barrier: ColorRange = DEFAULT_COLORS["barrier"]


class DistractorSpec(_RangeChecked):
    count: IntRange = 0
    s_ahead_m: Range = (0.0, 200.0)
    distance_m: Range = (1.0, 6.0)
    size_m: Range = (0.5, 1.5)


class SensorNoiseSpec(_RangeChecked):
    """None: the value of the sensors: section (the default)."""

    camera_noise_std: Range | None = None
    camera_dropout: Range | None = None
    lidar_noise_std: Range | None = None
    lidar_dropout: Range | None = None
    state_noise_std: Range | None = None


class CameraPoseSpec(_RangeChecked):
    """Camera pose jitter per episode: each a constant or a ``[low, high]`` range of the displacement
    from the mount (car frame: x forward, y left, z up; angles in degrees, + pitch looks up)."""

    dx_m: Range = 0.0
    dy_m: Range = 0.0
    dz_m: Range = 0.0
    dpitch_deg: Range = 0.0
    dyaw_deg: Range = 0.0


#: the entries of ScenarioSpec that are distributions (what a preset may overlay)
_DISTRIBUTIONS = ("traffic", "lead", "obstacles", "pedestrians", "light", "colors", "distractors",
                  "sensor_noise", "camera_pose")


class ScenarioSpec(FrozenModel):
    traffic: TrafficSpec = TrafficSpec()
    lead: LeadSpec = LeadSpec()
    obstacles: ObstacleSpec = ObstacleSpec()
    pedestrians: PedestrianSpec = PedestrianSpec()
    light: LightSpec = LightSpec()
    colors: ColorsSpec = ColorsSpec()
    distractors: DistractorSpec = DistractorSpec()
    sensor_noise: SensorNoiseSpec = SensorNoiseSpec()
    camera_pose: CameraPoseSpec = CameraPoseSpec()
    presets: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="named distributions (domain randomisation): overlays of the entries above, e.g. "
        "{appearance: {light: {intensity: [0.7, 1.3]}}}; they apply only when named in `use`",
    )
    use: list[str] = Field(
        default_factory=list,
        description="presets applied, in this order, over the nominal entries (later ones win); "
        "[] = the nominal distribution. Training only: a recipe's train_env_config: {scenario.use: [...]}",
    )

    _effective: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _presets(self) -> "ScenarioSpec":
        for name, overlay in self.presets.items():
            bad = sorted(set(overlay) - set(_DISTRIBUTIONS))
            if bad:
                raise ValueError(f"presets.{name}: {bad} cannot be set by a preset; valid: {list(_DISTRIBUTIONS)}")
            self._overlay(self.nominal(), overlay, f"presets.{name}")  # each preset valid on its own
        unknown = [n for n in self.use if n not in self.presets]
        if unknown:
            raise ValueError(f"use: unknown preset(s) {unknown}; this env defines {sorted(self.presets) or 'none'}")
        eff = self.nominal()
        for name in self.use:
            eff = self._overlay(eff, self.presets[name], f"presets.{name}")
        self._effective = ScenarioSpec.model_validate(eff) if self.use else None
        return self

    def nominal(self) -> dict[str, Any]:
        """The distribution entries without any preset (a plain dict)."""
        return {k: getattr(self, k).model_dump(mode="python") for k in _DISTRIBUTIONS}

    @staticmethod
    def _overlay(base: dict[str, Any], overlay: Mapping[str, Any], where: str) -> dict[str, Any]:
        merged = deep_merge(base, overlay)
        try:
            ScenarioSpec.model_validate(merged)
        except ValidationError as err:
            lines = [f"{where}.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()]
            raise ValueError("; ".join(lines)) from None
        return merged

    def effective(self) -> "ScenarioSpec":
        """The distribution episodes are drawn from: the nominal entries with the presets of ``use``
        applied in order (``self`` when ``use`` is empty)."""
        return self if self._effective is None else self._effective

    def preset(self, name: str) -> "ScenarioSpec":
        """The distribution of preset ``name`` alone over the nominal entries."""
        if name not in self.presets:
            raise KeyError(f"no preset {name!r}; this env defines {sorted(self.presets) or 'none'}")
        return ScenarioSpec.model_validate(deep_merge(self.nominal(), self.presets[name]))


# ---------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------
def _u(rng: np.random.Generator, r) -> float:
    """One draw: a constant is returned as is (but a draw is consumed, so streams stay aligned)."""
    x = rng.random()
    if isinstance(r, (tuple, list)):
        lo, hi = float(r[0]), float(r[1])
        return lo + (hi - lo) * x
    return float(r)


def _i(rng: np.random.Generator, r) -> int:
    x = rng.random()
    if isinstance(r, (tuple, list)):
        lo, hi = int(r[0]), int(r[1])
        return lo + min(int(x * (hi - lo + 1)), hi - lo)
    return int(r)


def _color(rng: np.random.Generator, r) -> RGBA:
    if isinstance(r[0], (tuple, list)):
        lo, hi = np.asarray(r[0], float), np.asarray(r[1], float)
        return tuple(float(v) for v in lo + (hi - lo) * rng.random(4))
    rng.random(4)
    return tuple(float(v) for v in r)


def _draw_ego(rng: np.random.Generator, ego_start: Mapping[str, Any]) -> dict[str, float]:
    return {
        "start_offset_m": float(rng.uniform(-ego_start["start_offset_m"], ego_start["start_offset_m"])),
        "start_heading_rad": float(rng.uniform(-ego_start["start_heading_rad"], ego_start["start_heading_rad"])),
        "start_speed_mps": float(rng.uniform(*ego_start["start_speed_mps"])),
    }


def _draw_traffic(rng: np.random.Generator, t: TrafficSpec, n_lanes: int, ego_lane: int, start_s_m: float) -> list[dict]:
    """Per lane, cars spaced by ``spacing_m``; the ego's lane fills from just ahead of the ego."""
    n = _i(rng, t.count)
    front = {lane: (start_s_m + 5.0 if lane == ego_lane else start_s_m - t.behind_m) for lane in range(n_lanes)}
    cars = []
    for _ in range(n):
        lane = int(rng.integers(n_lanes))
        s = front[lane] + 4.5 + _u(rng, t.spacing_m)
        front[lane] = s
        v = _u(rng, t.speed_mps)
        hue = rng.random(3)
        cars.append({"lane": lane, "s_m": s, "speed_mps": v, "desired_speed_mps": max(v, 0.1),
                     "color": (0.3 + 0.6 * float(hue[0]), 0.2 + 0.3 * float(hue[1]), 0.2 + 0.3 * float(hue[2]), 1.0)})
    return cars


def _draw_lead(rng: np.random.Generator, ld: LeadSpec) -> dict | None:
    lead = {
        "gap_m": _u(rng, ld.gap_m), "speed_mps": _u(rng, ld.speed_mps),
        "speed_amplitude_mps": _u(rng, ld.speed_amplitude_mps), "speed_period_s": _u(rng, ld.speed_period_s),
        "speed_phase_rad": float(rng.uniform(0, 2 * math.pi)),
        "brake_at_s": _u(rng, ld.brake_at_s) if ld.brake_at_s is not None else None,
        "brake_decel_mps2": _u(rng, ld.brake_decel_mps2), "brake_duration_s": _u(rng, ld.brake_duration_s),
    }
    return lead if ld.enabled else None


def _draw_obstacles(rng: np.random.Generator, o: ObstacleSpec, n_lanes: int, lane_width_m: float,
                    start_s_m: float) -> list[dict]:
    obs = []
    for _ in range(_i(rng, o.count)):
        lane = int(rng.integers(n_lanes))
        size = _u(rng, o.size_m)
        jit = _u(rng, o.lateral_jitter_m)
        d = (lane + 0.5 - 0.5 * n_lanes) * lane_width_m + float(rng.uniform(-jit, jit))
        obs.append({"s_m": start_s_m + _u(rng, o.s_ahead_m), "d_m": d,
                    "size_m": (size, size, size), "yaw_rad": float(rng.uniform(-0.5, 0.5))})
    return obs


def _draw_pedestrians(rng: np.random.Generator, p: PedestrianSpec, start_s_m: float) -> list[dict]:
    peds = []
    for _ in range(_i(rng, p.count)):
        peds.append({"s_m": start_s_m + _u(rng, p.s_ahead_m), "side": int(1 if rng.random() < 0.5 else -1),
                     "speed_mps": _u(rng, p.speed_mps), "trigger_distance_m": _u(rng, p.trigger_distance_m)})
    return sorted(peds, key=lambda q: q["s_m"])


def _draw_light(rng: np.random.Generator, li: LightSpec) -> dict:
    az, el = _u(rng, li.azimuth_deg or 0.0), _u(rng, li.elevation_deg or 0.0)
    if li.azimuth_deg is None and li.elevation_deg is None:
        direction = DEFAULT_LIGHT_DIRECTION
    else:
        d0 = np.asarray(DEFAULT_LIGHT_DIRECTION)
        az = az if li.azimuth_deg is not None else math.degrees(math.atan2(d0[1], d0[0]))
        el = el if li.elevation_deg is not None else math.degrees(math.atan2(d0[2], math.hypot(d0[0], d0[1])))
        a, e = math.radians(az), math.radians(el)
        direction = (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e))
    return {
        "direction": direction, "color": tuple(_u(rng, c) for c in li.color), "intensity": _u(rng, li.intensity),
        "ambient": _u(rng, li.ambient), "diffuse": _u(rng, li.diffuse), "specular": _u(rng, li.specular),
        "shadow": li.shadow,
    }


def light_angles_deg(direction: Vec3) -> tuple[float, float]:
    """``(azimuth, elevation)`` in degrees of a light direction vector (azimuth in [0, 360) from +x
    towards +y, elevation above the ground plane): the inverse of the spec's ``azimuth_deg`` /
    ``elevation_deg``."""
    x, y, z = (float(v) for v in direction)
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.atan2(z, math.hypot(x, y)))


def _draw_camera_pose(rng: np.random.Generator, cp: CameraPoseSpec) -> dict:
    return {"dx_m": _u(rng, cp.dx_m), "dy_m": _u(rng, cp.dy_m), "dz_m": _u(rng, cp.dz_m),
            "dpitch_rad": math.radians(_u(rng, cp.dpitch_deg)), "dyaw_rad": math.radians(_u(rng, cp.dyaw_deg))}


def _draw_distractors(rng: np.random.Generator, ds: DistractorSpec, start_s_m: float) -> list[dict]:
    return [
        {"s_m": start_s_m + _u(rng, ds.s_ahead_m), "side": int(1 if rng.random() < 0.5 else -1),
         "distance_m": _u(rng, ds.distance_m), "size_m": _u(rng, ds.size_m),
         "color": (float(rng.random()), float(rng.random()), float(rng.random()), 1.0)}
        for _ in range(_i(rng, ds.count))
    ]


def draw_factors(spec: ScenarioSpec, road_seed: int, *, n_lanes: int, lane_width_m: float, ego_lane: int,
                 start_s_m: float, ego_start: Mapping[str, Any], sensor_noise: Mapping[str, float]) -> dict[str, Any]:
    """Draw every non-road factor from its own stream. ``ego_start`` holds the start ranges of the task:
    ``start_offset_m`` (+-), ``start_heading_rad`` (+-), ``start_speed_mps`` ([lo, hi]); ``sensor_noise``
    the value of each sensor-noise factor that the spec does not draw (the ``sensors:`` section's,
    :func:`kai_drive.sensors.base.noise_defaults`). The spec's presets named in ``use`` apply
    (:meth:`ScenarioSpec.effective`)."""
    spec = spec.effective()

    def rng(factor: str) -> np.random.Generator:
        return factor_rng(road_seed, factor)

    out: dict[str, Any] = _draw_ego(rng("ego"), ego_start)
    out["traffic"] = _draw_traffic(rng("traffic"), spec.traffic, n_lanes, ego_lane, start_s_m)
    out["lead"] = _draw_lead(rng("lead"), spec.lead)
    out["obstacles"] = _draw_obstacles(rng("obstacles"), spec.obstacles, n_lanes, lane_width_m, start_s_m)
    out["pedestrians"] = _draw_pedestrians(rng("pedestrians"), spec.pedestrians, start_s_m)
    out["light"] = _draw_light(rng("light"), spec.light)
    colors = rng("colors")
    out["colors"] = {k: _color(colors, getattr(spec.colors, k)) for k in ("ground", "road", "marking", "barrier")}
    out["distractors"] = _draw_distractors(rng("distractors"), spec.distractors, start_s_m)
    noise, sn = rng("sensor_noise"), spec.sensor_noise
    out["sensor_noise"] = {k: (_u(noise, getattr(sn, k)) if getattr(sn, k) is not None else float(v))
                           for k, v in sensor_noise.items()}
    out["camera_pose"] = _draw_camera_pose(rng("camera_pose"), spec.camera_pose)
    return out
