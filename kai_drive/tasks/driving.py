"""Driving tasks. ``LaneKeepTask``: follow a procedural road in your lane, as far as the route goes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from kai_drive.sensors.base import Mount, ego_mount
from kai_drive.sim.road import RoadLayout, Route, build_road
from kai_drive.sim.vehicle import Vehicle, VehicleParams
from kai_drive.sim.world import World

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


class LaneKeepTask:
    """Drive along the route in lane ``ego_lane`` without leaving it or touching anything.

    Action: ``Box([-1, 1]^2)`` = (steering, throttle > 0 / brake < 0).
    Success (strict): the route is completed, no collision and the car's body never left its lane
    (with ``terminate_on_lane_invasion`` the first invasion also ends the episode).
    """

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

    # -- scenario --------------------------------------------------------------------------------
    def build(self, world: World, rng: np.random.Generator) -> dict[str, Any]:
        """Realise a scenario from ``rng`` in an empty ``world``; returns the scenario record."""
        r, t = self.spec.road, self.t
        length = float(rng.uniform(*r.length_m))
        self.route = Route.generate(rng, length_m=length, max_curvature=r.max_curvature, min_straight_m=r.min_straight_m)
        for name, body in build_road(world.client, self.route, self.layout).items():
            kind = "barrier" if name.startswith("barrier") else ("marking" if name == "markings" else name)
            world.add_body(name, body, kind=kind)
        d0 = self.lane_offset + float(rng.uniform(-t.start_offset_m, t.start_offset_m))
        dyaw = float(rng.uniform(-t.start_heading_rad, t.start_heading_rad))
        speed = float(rng.uniform(*t.start_speed_mps))
        x, y, yaw = self.route.pose_at(t.start_s_m, d0)
        self.ego = Vehicle(world.client, self.vehicle_params, x=x, y=y, yaw=yaw + dyaw, speed_mps=speed)
        world.add_body("ego", self.ego.body_id, kind="ego")
        world.set_ego(self.ego.body_id)
        self._solid = {b for b, k in world.kinds.items() if k not in _DRIVABLE and b != self.ego.body_id}
        self._ground = {b for b, k in world.kinds.items() if k in _DRIVABLE}
        self.stats = EpisodeStats(s_start=t.start_s_m, s=t.start_s_m)
        return {
            "route_length_m": self.route.length_m,
            "n_lanes": self.layout.n_lanes,
            "ego_lane": t.ego_lane,
            "start_offset_m": d0 - self.lane_offset,
            "start_heading_rad": dyaw,
            "start_speed_mps": speed,
        }

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
        self.ego.apply_control(float(action[0]), float(action[1]), dt)

    def evaluate(self, world: World, action: np.ndarray, dt: float, elapsed_s: float) -> tuple[float, bool, bool, dict]:
        """Score the step just simulated: ``(reward, terminated, truncated, info)``."""
        t, w, st = self.t, self.t.reward, self.stats
        ego = self.ego.state()
        s, d_road, e_head = self.route.project(ego.x, ego.y, ego.yaw, s_hint=st.s)
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
        clean = not st.collided and st.lane_invasions == 0
        success = finished and clean and not off_road

        terms = {
            "progress": w.progress * ds,
            "lateral": -w.lateral * (d / self._free) ** 2,
            "heading": -w.heading * e_head * e_head,
            "speed": -w.speed * max(0.0, ego.speed_mps - t.target_speed_mps) / t.target_speed_mps,
            "steer_rate": -w.steer_rate * steer_rate * steer_rate,
            "jerk": -w.jerk * jerk * jerk,
            "collision": -w.collision if collision else 0.0,
            "off_road": -w.off_road if off_road else 0.0,
            "lane_invasion": -w.lane_invasion if new_invasion else 0.0,
            "success": w.success if success else 0.0,
        }
        reward = float(sum(terms.values()))
        terminated = bool(
            finished or collision or off_road or (t.terminate_on_lane_invasion and invading)
        )
        truncated = bool(not terminated and elapsed_s >= t.time_limit_s - 1e-9)
        route_len = max(self.route.length_m - t.finish_margin_m - st.s_start, 1e-6)
        info = {
            "lateral_offset_m": d,
            "heading_error_rad": e_head,
            "speed_mps": ego.speed_mps,
            "accel_mps2": accel,
            "jerk_mps3": jerk,
            "yaw_rate_radps": ego.yaw_rate_radps,
            "steer_rad": ego.steer_rad,
            "s_m": s,
            "distance_m": s - st.s_start,
            "route_completion": float(min(max((s - st.s_start) / route_len, 0.0), 1.0)),
            "collision": collision,
            "collision_with": collided_with,
            "off_road": off_road,
            "lane_invasion": invading,
            "lane_invasions": st.lane_invasions,
            "cost": float(collision or off_road or invading),
            "is_success": success,
            "reward_terms": terms,
        }
        return reward, terminated, truncated, info

    def reset_info(self) -> dict:
        """Info of the first observation (same keys as a step's, where they make sense)."""
        ego = self.ego.state()
        s, d_road, e_head = self.route.project(ego.x, ego.y, ego.yaw)
        self.stats.s = s
        self.stats.s_start = s
        self.stats.extra["prev_speed"] = ego.speed_mps
        return {
            "lateral_offset_m": d_road - self.lane_offset,
            "heading_error_rad": e_head,
            "speed_mps": ego.speed_mps,
            "s_m": s,
            "distance_m": 0.0,
            "route_completion": 0.0,
            "is_success": False,
        }
