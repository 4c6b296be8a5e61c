"""Traffic: NPC cars (IDM + MOBIL), a scripted lead car, crossing pedestrians, static obstacles.

Every actor lives in the route's Frenet frame (arc length ``s`` m, lateral offset ``d`` m, + left) and
is a cheap kinematic PyBullet body (mass 0, a box or two) teleported along the route each control step
with ``resetBasePositionAndOrientation`` at ``Route.pose_at(s, d)``. The ego is a dynamic body, so its
contacts with them are real collisions (``getContactPoints``). Kinematic actors do not react to being
hit: an episode ends on a collision anyway.

Models
    * :func:`idm_accel`: the Intelligent Driver Model (Treiber et al. 2000).
    * MOBIL lane changes (Kesting et al. 2007), politeness ``p``, with a safety limit on the new follower's
      braking (the ego included, as it would have to brake); a change takes ``lane_change_s`` along a
      smoothstep, the car counts in both lanes meanwhile.
    * :class:`LeadCar` follows the scenario's speed profile and its hard brake, whatever is ahead.
    * :class:`Walker` waits beside the road, then crosses it at constant speed and stops on the far side.

All state is plain Python numbers: ``copy.deepcopy(traffic.state())`` is a complete snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from kai_drive.sim.bullet import pybullet
from kai_drive.sim.route import RoadLayout, Route

__all__ = ["IDMParams", "idm_accel", "Actor", "Traffic", "create_box_body", "EGO_LENGTH_M", "EGO_WIDTH_M"]

EGO_LENGTH_M = 4.5
EGO_WIDTH_M = 1.8
CAR_SIZE_M = (4.5, 1.8, 1.5)
PEDESTRIAN_SIZE_M = (0.5, 0.6, 1.75)


@dataclass(frozen=True)
class IDMParams:
    """IDM and MOBIL parameters (SI units)."""

    max_accel_mps2: float = 1.5
    comfort_decel_mps2: float = 2.5
    time_headway_s: float = 1.5
    min_gap_m: float = 2.5
    delta: float = 4.0
    max_decel_mps2: float = 8.0  # physical limit of a kinematic car
    politeness: float = 0.3
    change_threshold_mps2: float = 0.3
    safe_decel_mps2: float = 3.0  # the new follower must not need to brake harder
    lane_change_s: float = 3.0
    lane_change_cooldown_s: float = 6.0


def idm_accel(v: float, v0: float, gap: float, dv: float, p: IDMParams = IDMParams()) -> float:
    """IDM acceleration (m/s^2) at speed ``v`` with desired speed ``v0``, ``gap`` (m, bumper to bumper;
    ``math.inf`` if free road) and approach rate ``dv = v - v_leader`` (m/s)."""
    free = 1.0 - (v / max(v0, 0.1)) ** p.delta
    if math.isinf(gap):
        return p.max_accel_mps2 * free
    s_star = p.min_gap_m + max(0.0, v * p.time_headway_s + v * dv / (2.0 * math.sqrt(p.max_accel_mps2 * p.comfort_decel_mps2)))
    a = p.max_accel_mps2 * (free - (s_star / max(gap, 0.1)) ** 2)
    return max(a, -p.max_decel_mps2)


@dataclass
class Actor:
    """One traffic participant in Frenet coordinates. ``kind``: "vehicle", "pedestrian" or "obstacle"."""

    kind: str
    name: str
    body: int
    length_m: float
    width_m: float
    height_m: float
    s: float
    d: float
    v: float = 0.0  # speed along s, m/s
    vd: float = 0.0  # lateral speed, m/s
    yaw_offset: float = 0.0  # body yaw relative to the road heading, rad
    model: str = "static"  # static | idm | lead | walker
    lane: int = 0
    desired_speed: float = 0.0
    # lane change (idm)
    lc_from_d: float = 0.0
    lc_to_d: float = 0.0
    lc_to_lane: int = -1
    lc_t: float = -1.0  # time into the change, s; < 0: not changing
    lc_cooldown: float = 0.0
    # lead / walker
    params: dict = field(default_factory=dict)
    active: bool = False  # walker: crossing has started
    accel: float = 0.0


def create_box_body(client, size_m, rgba, *, cabin: bool = False, collide: bool = True) -> int:
    """A static (mass 0) box body whose base frame is the box's bottom centre. With ``cabin`` the visual is
    a lower body plus a narrower cabin (two boxes, 24 triangles) -- a car."""
    L, W, H = size_m
    col = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[L / 2, W / 2, H / 2],
                                      collisionFramePosition=[0, 0, H / 2]) if collide else -1
    if cabin:
        lower = 0.55 * H
        vis = client.createVisualShapeArray(
            shapeTypes=[pybullet.GEOM_BOX, pybullet.GEOM_BOX],
            halfExtents=[[L / 2, W / 2, lower / 2], [0.27 * L, 0.45 * W, (H - lower) / 2]],
            visualFramePositions=[[0, 0, lower / 2 + 0.1], [-0.08 * L, 0, lower + (H - lower) / 2]],
        )
        body = client.createMultiBody(0, col, vis, [0, 0, -50])
        client.changeVisualShape(body, -1, rgbaColor=list(rgba))
        return body
    vis = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=[L / 2, W / 2, H / 2],
                                   visualFramePosition=[0, 0, H / 2], rgbaColor=list(rgba))
    return client.createMultiBody(0, col, vis, [0, 0, -50])


class Traffic:
    """All actors of one episode and their models.

    Args:
        client: the world's ``BulletClient``.
        route, layout: the road.
        idm: IDM / MOBIL parameters of the NPC cars.
    """

    def __init__(self, client, route: Route, layout: RoadLayout, idm: IDMParams = IDMParams()) -> None:
        self.client = client
        self.route = route
        self.layout = layout
        self.idm = idm
        self.actors: list[Actor] = []
        self.time_s = 0.0

    # -- building ----------------------------------------------------------------------------------
    def add(self, actor: Actor) -> Actor:
        self.actors.append(actor)
        self._place(actor)
        return actor

    def add_car(self, name: str, lane: int, s: float, speed: float, desired: float, rgba, body: int, model: str = "idm",
                params: dict | None = None) -> Actor:
        L, W, H = CAR_SIZE_M
        d = self.layout.lane_center_offset(lane)
        return self.add(Actor("vehicle", name, body, L, W, H, s, d, v=speed, model=model, lane=lane,
                              desired_speed=desired, params=dict(params or {})))

    # -- state ---------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Python-side state (copy it with ``copy.deepcopy``)."""
        return {"time_s": self.time_s, "actors": self.actors}

    def set_state(self, state: dict[str, Any]) -> None:
        self.time_s = state["time_s"]
        self.actors = state["actors"]

    # -- stepping ------------------------------------------------------------------------------------
    def _lanes_of(self, d: float, half_w: float) -> tuple[int, ...]:
        lay = self.layout
        lanes = {lay.lane_at(d - half_w + 0.3), lay.lane_at(d + half_w - 0.3)}
        return tuple(sorted(lanes))

    def _on_road(self, a: Actor) -> bool:
        return abs(a.d) - 0.5 * a.width_m < self.layout.half_width_m

    def step(self, dt: float, ego_s: float, ego_d: float, ego_v: float) -> None:
        """Advance every actor by ``dt`` s given the ego's Frenet state, then move the bodies."""
        t = self.time_s
        # occupancy: (s, v, half length, lanes, actor or None for the ego)
        occ = [(ego_s, ego_v, 0.5 * EGO_LENGTH_M, self._lanes_of(ego_d, 0.5 * EGO_WIDTH_M), None)]
        for a in self.actors:
            if a.kind == "vehicle":
                lanes = (a.lane,) if a.lc_t < 0 else tuple(sorted({a.lane, a.lc_to_lane}))
            elif self._on_road(a):
                lanes = self._lanes_of(a.d, 0.5 * a.width_m)
            else:
                continue
            occ.append((a.s, a.v, 0.5 * a.length_m, lanes, a))
        new_acc = {}
        for a in self.actors:
            if a.model == "idm":
                new_acc[id(a)] = self._idm_step(a, occ, dt)
            elif a.model == "lead":
                new_acc[id(a)] = self._lead_accel(a, t)
        for a in self.actors:
            if a.model in ("idm", "lead"):
                acc = new_acc[id(a)]
                v_new = max(0.0, a.v + acc * dt)
                a.s += 0.5 * (a.v + v_new) * dt
                a.accel = (v_new - a.v) / dt
                a.v = v_new
                if a.lc_t >= 0.0:
                    a.lc_t += dt
                    T = self.idm.lane_change_s
                    x = min(a.lc_t / T, 1.0)
                    w = x * x * (3.0 - 2.0 * x)
                    d_new = a.lc_from_d + (a.lc_to_d - a.lc_from_d) * w
                    a.vd = (d_new - a.d) / dt
                    a.d = d_new
                    if x >= 1.0:
                        a.lane, a.lc_t, a.lc_to_lane, a.vd = a.lc_to_lane, -1.0, -1, 0.0
                        a.lc_cooldown = self.idm.lane_change_cooldown_s
                a.lc_cooldown = max(0.0, a.lc_cooldown - dt)
                a.yaw_offset = math.atan2(a.vd, max(a.v, 0.5))
            elif a.model == "walker":
                self._walk(a, t, dt, ego_s)
        self.time_s = t + dt
        for a in self.actors:
            if a.model != "static":
                self._place(a)

    def _leader(self, s: float, lanes: tuple[int, ...], occ, me) -> tuple[float, float]:
        """(gap m, leader speed) of the nearest occupant ahead of ``s`` in any of ``lanes``."""
        best_gap, best_v = math.inf, 0.0
        half = 0.5 * CAR_SIZE_M[0]
        for s_o, v_o, h_o, lanes_o, a_o in occ:
            if a_o is me or s_o <= s:
                continue
            if not any(l in lanes_o for l in lanes):
                continue
            gap = s_o - s - half - h_o
            if gap < best_gap:
                best_gap, best_v = gap, v_o
        return best_gap, best_v

    def _follower(self, s: float, lane: int, occ, me):
        best = None
        half = 0.5 * CAR_SIZE_M[0]
        for o in occ:
            s_o, v_o, h_o, lanes_o, a_o = o
            if a_o is me or s_o >= s or lane not in lanes_o:
                continue
            gap = s - s_o - half - h_o
            if best is None or gap < best[0]:
                best = (gap, o)
        return best

    def _idm_step(self, a: Actor, occ, dt: float) -> float:
        p = self.idm
        lanes = (a.lane,) if a.lc_t < 0 else (a.lane, a.lc_to_lane)
        gap, v_l = self._leader(a.s, lanes, occ, a)
        acc = idm_accel(a.v, a.desired_speed, gap, a.v - v_l, p)
        if a.lc_t >= 0.0 or a.lc_cooldown > 0.0 or self.layout.n_lanes < 2:
            return acc
        best = None
        for target in (a.lane - 1, a.lane + 1):
            if not 0 <= target < self.layout.n_lanes:
                continue
            g_new, v_new = self._leader(a.s, (target,), occ, a)
            if g_new < 2.0 * p.min_gap_m:
                continue
            acc_new = idm_accel(a.v, a.desired_speed, g_new, a.v - v_new, p)
            fol = self._follower(a.s, target, occ, a)
            penalty = 0.0
            if fol is not None:
                g_f, (s_f, v_f, _, _, a_f) = fol
                if g_f < p.min_gap_m:
                    continue
                v0_f = a_f.desired_speed if a_f is not None else max(v_f, 1.0)
                acc_f_after = idm_accel(v_f, v0_f, g_f, v_f - a.v, p)
                if acc_f_after < -p.safe_decel_mps2:
                    continue
                g_fb, v_fb = self._leader(s_f, (target,), occ, a_f if a_f is not None else "ego")
                acc_f_before = idm_accel(v_f, v0_f, g_fb, v_f - v_fb, p)
                penalty = p.politeness * max(0.0, acc_f_before - acc_f_after)
            gain = acc_new - acc - penalty
            if gain > p.change_threshold_mps2 and (best is None or gain > best[0]):
                best = (gain, target)
        if best is not None:
            target = best[1]
            a.lc_to_lane, a.lc_from_d, a.lc_t = target, a.d, 0.0
            a.lc_to_d = self.layout.lane_center_offset(target)
        return acc

    def _lead_accel(self, a: Actor, t: float) -> float:
        q = a.params
        brake_at = q.get("brake_at_s")
        if brake_at is not None and brake_at <= t < brake_at + q["brake_duration_s"]:
            return -q["brake_decel_mps2"] if a.v > 0.0 else 0.0
        target = q["speed_mps"] + q["speed_amplitude_mps"] * math.sin(2 * math.pi * t / q["speed_period_s"] + q["speed_phase_rad"])
        k = q["max_accel_mps2"]
        return min(max((target - a.v) / 1.0, -k), k)

    def _walk(self, a: Actor, t: float, dt: float, ego_s: float) -> None:
        q = a.params
        if not a.active:
            start = q.get("start_time_s")
            trig = t >= start if start is not None else ego_s + 0.5 * EGO_LENGTH_M + q["trigger_distance_m"] >= a.s
            if not trig:
                return
            a.active = True
        goal = q["goal_d"]
        step = q["speed_mps"] * dt
        rem = goal - a.d
        if abs(rem) <= step:
            a.d, a.vd = goal, 0.0
        else:
            a.vd = math.copysign(q["speed_mps"], rem)
            a.d += a.vd * dt

    def _place(self, a: Actor) -> None:
        x, y, yaw = self.route.pose_at(a.s, a.d)
        yaw += a.yaw_offset
        half = 0.5 * yaw
        self.client.resetBasePositionAndOrientation(a.body, [x, y, 0.0], [0.0, 0.0, math.sin(half), math.cos(half)])
