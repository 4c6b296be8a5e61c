"""Driving tasks.

``LaneKeepTask`` (kind ``lane_keep``): follow a procedural road in your lane, as far as the route goes.
``DriveTask`` (kind ``drive``): the same task in traffic (follow, highway, crossing envs); with
``lane_changes: true`` the lane is the nearest one and crossing lane lines is allowed.

Both realise a :class:`kai_drive.sim.scenario.Scenario` record from the env's ``scenario:`` spec and
the seed (:meth:`LaneKeepTask.realise`), then build it (:meth:`LaneKeepTask.build_scenario`): every
factor of an episode is data that a caller can set.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import numpy as np
from gymnasium import spaces
from pydantic import Field, ValidationError

from kai_drive.config import FrozenModel, deep_merge
from kai_drive.sensors import Mount, ego_mount, noise_defaults
from kai_drive.sim.road import build_road
from kai_drive.sim.route import RoadLayout, Route
from kai_drive.sim.scenario import Scenario, ScenarioSpec, draw_factors
from kai_drive.sim.traffic import EGO_LENGTH_M, PEDESTRIAN_SIZE_M, Actor, Traffic, create_box_body
from kai_drive.sim.vehicle import Vehicle, VehicleParams
from kai_drive.sim.world import World
from kai_drive.tasks.base import Task, register_task


# ---------------------------------------------------------------------------------------------
# specs of the ``task:`` section
# ---------------------------------------------------------------------------------------------
class RewardSpec(FrozenModel):
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


class LaneKeepTaskSpec(FrozenModel):
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


#: body kinds that the car may touch without it being a collision
_DRIVABLE = ("ground", "road", "marking")


@dataclass
class EpisodeStats:
    """Running counters of one episode."""

    steps: int = 0
    lane_invasions: int = 0
    invaded: bool = False  # inside a lane-invasion event (counts rising edges)
    collided: bool = False
    prev_accel: float = 0.0
    prev_steer_cmd: float = 0.0
    s_start: float = 0.0
    s: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class StepMeasures:
    """What one step of a driving task measured (the input of its reward terms, termination and info)."""

    ego: Any  # the car's VehicleState after the step
    s: float  # arc length along the route, m
    d: float  # lateral offset from the lane centre, m
    d_road: float  # lateral offset from the road's centre line, m
    e_head: float  # heading error, rad
    ds: float  # progress along the route in this step, m
    invading: bool
    new_invasion: bool
    off_road: bool
    collision: bool
    collided_with: str
    accel: float
    jerk: float
    steer_rate: float  # change of the steering command, action units
    finished: bool
    success: bool
    near: dict  # actor_ahead()


@register_task("lane_keep", LaneKeepTaskSpec)
class LaneKeepTask(Task):
    """Drive along the route in lane ``ego_lane`` without leaving it or touching anything.

    Action: ``Box([-1, 1]^2)`` = (steering, throttle > 0 / brake < 0).
    Success (strict): the route is completed, no collision and the car's body never left its lane
    (with ``terminate_on_lane_invasion`` the first invasion also ends the episode).
    """

    family = "driving"  # kai_drive.tasks.FAMILIES: what metrics, experts and evaluation dispatch on
    has_scenario = True  # realise() + build_scenario(): scenario factors as data
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    PROPRIO_FIELDS = Vehicle.PROPRIO_FIELDS

    def __init__(self, spec: Any) -> None:
        self.spec = spec  # the whole EnvSpec: task, road and vehicle sections are used
        t, r, v = spec.task, spec.road, spec.vehicle
        self.t = t
        self.layout = RoadLayout(
            n_lanes=r.n_lanes, lane_width_m=r.lane_width_m, shoulder_m=r.shoulder_m, edge=r.edge
        )
        self.vehicle_params = VehicleParams(
            mass_kg=v.mass_kg,
            max_steer_rad=v.max_steer_rad,
            max_steer_rate_radps=v.max_steer_rate_radps,
            max_speed_mps=v.max_speed_mps,
            color=tuple(v.color),
        )
        self.lane_offset = self.layout.lane_center_offset(t.ego_lane)
        self.route: Route | None = None
        self.ego: Vehicle | None = None
        self.stats = EpisodeStats()
        self._solid: set[int] = set()
        p = self.vehicle_params
        self._half_l, self._half_w = 0.5 * p.length_m, 0.5 * p.width_m
        self._lane_half = 0.5 * r.lane_width_m
        self._free = max(self._lane_half - self._half_w, 0.1)  # room between body and lane edge, m
        self._paved_half = self.layout.half_width_m + r.shoulder_m
        self._lane_changes = bool(getattr(t, "lane_changes", False))
        self.traffic = Traffic(None, None, self.layout)
        self._time_s = 0.0
        self._frenet = (0.0, 0.0, 0.0)
        self.scenario: Scenario | None = None

    # -- scenario --------------------------------------------------------------------------------
    def realise(self, road_seed: int, noise_seed: int, overrides: Mapping[str, Any] | None = None) -> Scenario:
        """The scenario record of ``road_seed``: every factor drawn from its own stream, then ``overrides``
        (a subset of the record, nested; lists replace whole) set exactly. Raises ``ValueError`` naming
        the factor when an override is not a valid record entry."""
        r, t = self.spec.road, self.t
        rec: dict[str, Any] = {
            "road_seed": int(road_seed),
            "noise_seed": int(noise_seed),
            # the road's own stream is default_rng(road_seed): its first draw is the length (as always)
            "route_length_m": float(np.random.default_rng(road_seed).uniform(*r.length_m)),
            "n_lanes": r.n_lanes,
            "ego_lane": t.ego_lane,
        }
        overrides = dict(overrides or {})
        n_lanes = int(overrides.get("n_lanes", r.n_lanes))
        ego_lane = int(overrides.get("ego_lane", t.ego_lane))
        scen_spec = getattr(self.spec, "scenario", None) or ScenarioSpec()
        rec.update(draw_factors(
            scen_spec, road_seed, n_lanes=n_lanes, lane_width_m=r.lane_width_m, ego_lane=min(ego_lane, n_lanes - 1),
            start_s_m=t.start_s_m, sensor_noise=noise_defaults(self.spec.sensors),
            ego_start={"start_offset_m": t.start_offset_m, "start_heading_rad": t.start_heading_rad,
                       "start_speed_mps": t.start_speed_mps},
        ))
        unknown = set(overrides) - set(Scenario.model_fields)
        if unknown:
            raise ValueError(
                f"reset(options={{'scenario': ...}}): unknown factors {sorted(unknown)}; valid: {sorted(Scenario.model_fields)}"
            )
        rec = deep_merge(rec, overrides)
        try:
            return Scenario.model_validate(rec)
        except ValidationError as err:
            lines = [f"scenario.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in err.errors()]
            raise ValueError("reset(options={'scenario': ...}): invalid factor(s):\n" + "\n".join(lines)) from None

    def build(self, world: World, rng: np.random.Generator) -> dict[str, Any]:
        """Realise a scenario from ``rng`` in an empty ``world``; returns the scenario record."""
        seed = int(rng.integers(0, 2**31 - 1))
        rec = self.realise(seed, 0)
        self.build_scenario(world, rec)
        return rec.model_dump(mode="json")

    def build_scenario(self, world: World, sc: Scenario) -> None:
        """Create the scene of record ``sc`` in an empty ``world`` (deterministic: same record, same bytes)."""
        r, t = self.spec.road, self.t
        self.scenario = sc
        if sc.n_lanes != self.layout.n_lanes:
            self.layout = RoadLayout(n_lanes=sc.n_lanes, lane_width_m=r.lane_width_m, shoulder_m=r.shoulder_m, edge=r.edge)
            self._paved_half = self.layout.half_width_m + r.shoulder_m
        self.lane_offset = self.layout.lane_center_offset(sc.ego_lane)
        rng = np.random.default_rng(sc.road_seed)
        rng.uniform(*r.length_m)  # the length draw (the record may override it)
        self.route = Route.generate(rng, length_m=sc.route_length_m, max_curvature=r.max_curvature,
                                    min_straight_m=r.min_straight_m)
        colors = sc.colors.model_dump()
        for name, body in build_road(world.client, self.route, self.layout, colors=colors).items():
            kind = "barrier" if name.startswith("barrier") else ("marking" if name == "markings" else name)
            world.add_body(name, body, kind=kind)
        d0 = self.lane_offset + sc.start_offset_m
        x, y, yaw = self.route.pose_at(t.start_s_m, d0)
        self.ego = Vehicle(world.client, self.vehicle_params, x=x, y=y, yaw=yaw + sc.start_heading_rad,
                           speed_mps=sc.start_speed_mps)
        world.add_body("ego", self.ego.body_id, kind="ego")
        world.set_ego(self.ego.body_id)
        self._build_actors(world, sc)
        world.skip_static_contacts()  # speed only: barrier-on-ground contacts move nothing
        self._solid = {b for b, k in world.kinds.items() if k not in _DRIVABLE and b != self.ego.body_id}
        self._ground = {b for b, k in world.kinds.items() if k in _DRIVABLE}
        self.stats = EpisodeStats(s_start=t.start_s_m, s=t.start_s_m)
        self._time_s = 0.0
        self._frenet = (t.start_s_m, d0, sc.start_speed_mps)

    def _build_actors(self, world: World, sc: Scenario) -> None:
        c = world.client
        self.traffic = tr = Traffic(c, self.route, self.layout)
        lay = self.layout
        if sc.lead is not None:
            q = sc.lead.model_dump()
            v0 = q["speed_mps"] + q["speed_amplitude_mps"] * math.sin(q["speed_phase_rad"])
            body = world.add_body("lead", create_box_body(c, (4.5, 1.8, 1.5), q["color"], cabin=True), kind="vehicle")
            tr.add_car("lead", sc.ego_lane, self.t.start_s_m + EGO_LENGTH_M + q["gap_m"], max(v0, 0.0), q["speed_mps"],
                       q["color"], body, model="lead", params=q)
        for i, car in enumerate(sc.traffic):
            if car.lane >= lay.n_lanes:
                raise ValueError(f"scenario.traffic[{i}].lane={car.lane} but the road has {lay.n_lanes} lane(s)")
            body = world.add_body(f"car_{i}", create_box_body(c, (4.5, 1.8, 1.5), car.color, cabin=True), kind="vehicle")
            tr.add_car(f"car_{i}", car.lane, car.s_m, car.speed_mps, car.desired_speed_mps, car.color, body)
        for i, ob in enumerate(sc.obstacles):
            body = world.add_body(f"obstacle_{i}", create_box_body(c, ob.size_m, ob.color), kind="obstacle")
            L, W, H = ob.size_m
            tr.add(Actor("obstacle", f"obstacle_{i}", body, L, W, H, ob.s_m, ob.d_m, yaw_offset=ob.yaw_rad))
        edge = lay.half_width_m + self.spec.road.shoulder_m
        for i, p in enumerate(sc.pedestrians):
            body = world.add_body(f"pedestrian_{i}", create_box_body(c, PEDESTRIAN_SIZE_M, (0.9, 0.75, 0.2, 1.0)),
                                  kind="pedestrian")
            d_side = p.side * (edge + lay.barrier_thickness_m + 0.6)
            d_start = d_side if p.start_d_m is None else p.start_d_m
            L, W, H = PEDESTRIAN_SIZE_M
            tr.add(Actor("pedestrian", f"pedestrian_{i}", body, L, W, H, p.s_m, d_start, model="walker",
                         yaw_offset=-p.side * 0.5 * math.pi,
                         params={"speed_mps": p.speed_mps, "trigger_distance_m": p.trigger_distance_m,
                                 "start_time_s": p.start_time_s, "goal_d": -d_side}))
        for i, dz in enumerate(sc.distractors):
            body = world.add_body(f"distractor_{i}", create_box_body(c, (dz.size_m,) * 3, dz.color), kind="distractor")
            d = dz.side * (edge + lay.barrier_thickness_m + dz.distance_m + 0.5 * dz.size_m)
            tr.add(Actor("distractor", f"distractor_{i}", body, dz.size_m, dz.size_m, dz.size_m, dz.s_m, d))
        # distractors are scenery: not traffic participants
        self.traffic.actors = [a for a in tr.actors if a.kind != "distractor"]

    # -- privileged scene queries (info, scripted policies) ---------------------------------------
    def actor_ahead(self, horizon_s: float = 8.0) -> dict[str, Any]:
        """The nearest relevant actor ahead of the ego: ``{"gap_m", "ttc_s", "headway_s", "kind",
        "speed_mps"}`` (inf / "" when none). Relevant: its footprint overlaps the ego's path (ego width +
        0.6 m) now, or will while the ego passes it under constant-velocity projection (pedestrians,
        cars changing lane). ``gap_m`` is bumper to bumper along the route; ``ttc_s`` is gap / closing
        speed (inf when not closing); ``headway_s`` is gap / ego speed."""
        s_e, d_e, v_e = self._frenet
        half_e = 0.5 * EGO_LENGTH_M
        corridor = 0.5 * self.vehicle_params.width_m + 0.3
        best = None
        for a in self.traffic.actors:
            gap = a.s - s_e - half_e - 0.5 * a.length_m
            if gap < -0.5 * a.length_m - half_e or gap > 120.0:
                continue
            lat = corridor + 0.5 * a.width_m
            rel_d = a.d - d_e
            if abs(rel_d) >= lat:
                if a.vd == 0.0:
                    continue
                # constant-velocity projection of the lateral motion over the ego's pass
                closing = v_e - a.v
                t_front = max(gap, 0.0) / closing if closing > 0.1 else math.inf
                if t_front > horizon_s:
                    continue
                t_rear = (max(gap, 0.0) + EGO_LENGTH_M + a.length_m) / max(closing, 0.1)
                t_in = (abs(rel_d) - lat) / abs(a.vd) if rel_d * a.vd < 0 else math.inf
                t_out = (abs(rel_d) + lat) / abs(a.vd) if rel_d * a.vd < 0 else -math.inf
                if not (t_in <= t_rear + 0.5 and t_out >= t_front - 0.5):
                    continue
            if best is None or gap < best[0]:
                best = (gap, a)
        if best is None:
            return {"gap_m": math.inf, "ttc_s": math.inf, "headway_s": math.inf, "kind": "", "speed_mps": math.inf}
        gap, a = best
        gap = max(gap, 0.0)
        closing = v_e - a.v
        return {
            "gap_m": gap,
            "ttc_s": gap / closing if closing > 1e-6 else math.inf,
            "headway_s": gap / v_e if v_e > 1e-6 else math.inf,
            "kind": a.kind,
            "speed_mps": a.v,
        }

    # -- save / restore (the Python side; PyBullet's is the world's) -------------------------------
    def save_state(self) -> dict[str, Any]:
        e = self.ego
        return copy.deepcopy({
            "stats": self.stats, "traffic": self.traffic.state(), "time_s": self._time_s, "frenet": self._frenet,
            "ego": (e.steer_rad, e.last_command, e._cmd_dt, e._speed_at_cmd),
        })

    def restore_state(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.stats = state["stats"]
        self.traffic.set_state(state["traffic"])
        self._time_s = state["time_s"]
        self._frenet = state["frenet"]
        e = self.ego
        e.steer_rad, e.last_command, e._cmd_dt, e._speed_at_cmd = state["ego"]

    # -- what sensors and the renderer need ------------------------------------------------------
    def sensor_mount(self, world: World) -> Mount:
        """On-board sensors sit on the ego car (mount heights are above the ground)."""
        return ego_mount(world.client, self.ego.body_id, self.ego.spawn_z)

    def chase_view(self, distance_m: float, height_m: float) -> tuple[list[float], list[float]]:
        """Eye and target points of a camera following the car."""
        st = self.ego.state()
        c, s = math.cos(st.yaw), math.sin(st.yaw)
        eye = [st.x - distance_m * c, st.y - distance_m * s, height_m]
        return eye, [st.x + 4.0 * c, st.y + 4.0 * s, 0.8]

    # -- step ------------------------------------------------------------------------------------
    def apply(self, action: np.ndarray, dt: float) -> None:
        """Move the traffic to its pose at the end of this step, then command the ego."""
        if self.traffic.actors:
            s_e, d_e, v_e = self._frenet
            self.traffic.step(dt, s_e, d_e, v_e)
        self._time_s += dt
        self.ego.apply_control(float(action[0]), float(action[1]), dt)

    # evaluate() is Task's: _measure -> _reward_terms, _terminated, _info
    def _measure(self, world: World, action: np.ndarray, dt: float) -> "StepMeasures":
        """Where the car is (Frenet), what it touched and how it moved in the step; updates the counters."""
        t, st = self.t, self.stats
        ego = self.ego.state()
        s, d_road, e_head = self.route.project(ego.x, ego.y, ego.yaw, s_hint=st.s)
        self._frenet = (s, d_road, ego.speed_mps)
        if self._lane_changes:  # the lane is whichever the car is in
            d = d_road - self.layout.lane_center_offset(self.layout.lane_at(d_road))
        else:
            d = d_road - self.lane_offset
        ds = s - st.s
        st.s = s
        st.steps += 1

        # footprint corners' lateral positions (small-angle Frenet frame around the centre)
        se, ce = math.sin(e_head), math.cos(e_head)
        reach = abs(self._half_l * se) + abs(self._half_w * ce)
        d_max, d_min = d + reach, d - reach
        invading = d_max > self._lane_half or d_min < -self._lane_half
        new_invasion = invading and not st.invaded
        st.invaded = invading
        if new_invasion:
            st.lane_invasions += 1
        off_road = d_road + reach > self._paved_half or d_road - reach < -self._paved_half

        collided_with = ""
        for c in world.client.getContactPoints(bodyA=self.ego.body_id):
            if c[2] in self._solid:
                collided_with = world.kinds.get(c[2], "obstacle")
                break
        collision = bool(collided_with)
        st.collided |= collision

        accel = (ego.speed_mps - st.extra.get("prev_speed", ego.speed_mps)) / dt
        st.extra["prev_speed"] = ego.speed_mps
        jerk = (accel - st.prev_accel) / dt if st.steps > 1 else 0.0
        st.prev_accel = accel
        steer_rate = float(action[0]) - st.prev_steer_cmd
        st.prev_steer_cmd = float(action[0])

        finished = s >= self.route.length_m - t.finish_margin_m
        clean = not st.collided and (self._lane_changes or st.lane_invasions == 0)
        near = self.actor_ahead()
        return StepMeasures(
            ego=ego, s=s, d=d, d_road=d_road, e_head=e_head, ds=ds, invading=invading, new_invasion=new_invasion,
            off_road=off_road, collision=collision, collided_with=collided_with, accel=accel, jerk=jerk,
            steer_rate=steer_rate, finished=finished, success=finished and clean and not off_road, near=near,
        )

    def _reward_terms(self, m: "StepMeasures") -> dict[str, float]:
        """Each weighted term of the step's reward (``info["reward_terms"]``); the reward is their sum."""
        t, w, ego = self.t, self.t.reward, m.ego
        return {
            "progress": w.progress * m.ds,
            "lateral": -w.lateral * (m.d / self._free) ** 2,
            "heading": -w.heading * m.e_head * m.e_head,
            "speed": -w.speed * max(0.0, ego.speed_mps - t.target_speed_mps) / t.target_speed_mps,
            "slow": -w.slow * max(0.0, t.target_speed_mps - ego.speed_mps) / t.target_speed_mps,
            "steer_rate": -w.steer_rate * m.steer_rate * m.steer_rate,
            "jerk": -w.jerk * m.jerk * m.jerk,
            "collision": -w.collision if m.collision else 0.0,
            "off_road": -w.off_road if m.off_road else 0.0,
            "lane_invasion": -w.lane_invasion if m.new_invasion else 0.0,
            "success": w.success if m.success else 0.0,
            "unsafe_ttc": -getattr(w, "unsafe_ttc", 0.0) if m.near["ttc_s"] < getattr(t, "ttc_threshold_s", 0.0) else 0.0,
        }

    def _terminated(self, m: "StepMeasures") -> bool:
        """The route is done, or the car hit something, left the road or (when that ends it) its lane."""
        return bool(
            m.finished or m.collision or m.off_road
            or (self.t.terminate_on_lane_invasion and m.invading and not self._lane_changes)
        )

    def _info(self, m: "StepMeasures", terms: dict[str, float]) -> dict[str, Any]:
        t, st, ego = self.t, self.stats, m.ego
        route_len = max(self.route.length_m - t.finish_margin_m - st.s_start, 1e-6)
        return {
            "lateral_offset_m": m.d,
            "heading_error_rad": m.e_head,
            "speed_mps": ego.speed_mps,
            "accel_mps2": m.accel,
            "jerk_mps3": m.jerk,
            "yaw_rate_radps": ego.yaw_rate_radps,
            "steer_rad": ego.steer_rad,
            "s_m": m.s,
            "distance_m": m.s - st.s_start,
            "route_completion": float(min(max((m.s - st.s_start) / route_len, 0.0), 1.0)),
            "collision": m.collision,
            "collision_with": m.collided_with,
            "off_road": m.off_road,
            "lane_invasion": m.invading,
            "lane_invasions": st.lane_invasions,
            "cost": float(m.collision or m.off_road or (m.invading and not self._lane_changes)),
            "ttc_s": m.near["ttc_s"],
            "headway_s": m.near["headway_s"],
            "gap_m": m.near["gap_m"],
            "nearest_actor": m.near["kind"],
            "is_success": m.success,
            "reward_terms": terms,
        }

    def reset_info(self) -> dict:
        """Info of the first observation (same keys as a step's, where they make sense)."""
        ego = self.ego.state()
        s, d_road, e_head = self.route.project(ego.x, ego.y, ego.yaw)
        self.stats.s = s
        self.stats.s_start = s
        self.stats.extra["prev_speed"] = ego.speed_mps
        self._frenet = (s, d_road, ego.speed_mps)
        near = self.actor_ahead()
        return {
            "ttc_s": near["ttc_s"],
            "headway_s": near["headway_s"],
            "gap_m": near["gap_m"],
            "nearest_actor": near["kind"],
            "lateral_offset_m": d_road - self.lane_offset,
            "heading_error_rad": e_head,
            "speed_mps": ego.speed_mps,
            "s_m": s,
            "distance_m": 0.0,
            "route_completion": 0.0,
            "is_success": False,
        }


@register_task("drive", DriveTaskSpec)
class DriveTask(LaneKeepTask):
    """Driving in traffic (kind ``drive``): lane keeping's rewards and rules plus the scenario's actors;
    ``lane_changes: true`` measures the lane offset to the nearest lane and lets the car cross lane lines
    (success = route done, no collision, never off the road)."""
