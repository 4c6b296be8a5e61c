"""Grasping: pick any object out of a tray with a Franka Panda (``GraspTask``, ``task.kind: grasp``).

The workcell (world frame, m): pybullet_data's table with its top at z = 0.625, a tray (``traybox``
scaled 0.8, floor at :data:`FLOOR_Z`) centred at the origin, and the Panda's base at
``(-0.55, 0, 0.625)`` facing +x. 1-5 objects from the configured split (:data:`OBJECT_SPLITS`) are
dropped into the tray and settle before the first observation.

Object splits (fixed, disjoint; ``task.object_split``), carved out of :data:`kai_drive.sim.objects.SPLITS`:

* ``train``: random URDFs 000-799 (799 models: 168 is broken) + box;
* ``validation``: random URDFs 800-899 (100 models) + cylinder;
* ``test``: random URDFs 900-999 (100 models) + capsule, sphere (unchanged since the first test figures).

Train on ``train``, select models (periodic evaluation) on ``validation``, report on ``test``. The test
split is exactly the one every published test figure used; validation takes the last 100 URDFs and one of
the two primitives of the former train side, so, like test, it holds a primitive kind training never saw.

Action (``assisted: false``): ``Box([-1, 1]^5)`` = ``(dx, dy, dz, dyaw, grip)``: the end-effector
target moves by ``max_step_m`` per unit (m per step) and ``max_yaw_step_rad`` per unit, clipped to
the workspace box above the tray; ``grip > 0`` closes the gripper, ``<= 0`` opens it. Joint targets
come from PyBullet's IK.

Assisted mode (``assisted: true``, after Quillen et al. 2018): ``Box([-1, 1]^3)`` = ``(dx, dy, dyaw)``;
the gripper descends by itself, closes at the bottom, lifts, and the episode ends after the lift
(success or not): an agent only has to choose where and at what yaw to grasp.

Success: an object lifted ``lift_height_m`` above where it rested at the start, touching a finger,
for ``hold_s`` seconds in a row. The episode then terminates.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pybullet_data
from gymnasium import spaces
from pydantic import Field, model_validator

from kai_drive.config import FrozenModel
from kai_drive.sensors.base import Mount
from kai_drive.sim.arm import MAX_OPENING_M, PandaArm
from kai_drive.sim.bullet import pybullet
from kai_drive.sim.objects import SPLITS, Spawned, load_model, object_points, spawn_object
from kai_drive.sim.world import World
from kai_drive.tasks.base import Task, register_task

__all__ = ["GraspTask", "GraspTaskSpec", "GraspRewardSpec", "OBJECT_SPLITS", "object_models", "TRAY_CENTER", "FLOOR_Z"]

_DATA = pybullet_data.getDataPath()
TABLE_TOP_Z = 0.625
TRAY_SCALE = 0.8
TRAY_CENTER = np.array([0.0, 0.0, TABLE_TOP_Z])
FLOOR_Z = TABLE_TOP_Z + 0.015 * TRAY_SCALE  # top of the tray's floor
TRAY_RIM_HALF_M = 0.3 * TRAY_SCALE  # half width of the tray at its rim
ARM_BASE = (-0.55, 0.0, TABLE_TOP_Z)

#: first random-URDF index of the validation split (the train side of ``sim.objects.SPLITS`` is 000-899)
VALIDATION_URDF_START = 800
#: split -> (urdf model names, shape model names); fixed, disjoint, never seed-dependent
OBJECT_SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (
        tuple(m for m in SPLITS["train"][0] if int(m.split("/")[1]) < VALIDATION_URDF_START),
        ("shape/box",),
    ),
    "validation": (
        tuple(m for m in SPLITS["train"][0] if int(m.split("/")[1]) >= VALIDATION_URDF_START),
        ("shape/cylinder",),
    ),
    "test": SPLITS["test"],  # unchanged: test figures before and after the validation split compare
}
ObjectSplit = Literal["train", "validation", "test"]


def object_models(split: str) -> tuple[str, ...]:
    """Every model name of ``split`` ("train", "validation" or "test"): random URDFs first, then shapes."""
    if split not in OBJECT_SPLITS:
        raise ValueError(f"object split must be one of {', '.join(OBJECT_SPLITS)}, got {split!r}")
    urdfs, shapes = OBJECT_SPLITS[split]
    return urdfs + shapes


# ---------------------------------------------------------------------------------------------
# spec of the ``task:`` section
# ---------------------------------------------------------------------------------------------
class GraspRewardSpec(FrozenModel):
    success: float = Field(1.0, description="terminal bonus when an object has been lifted and held")
    reach: float = Field(1.0, description="dense: per metre the gripper gets closer to the nearest object")
    grasp: float = Field(0.25, description="dense: when an object starts (+) / stops (-) touching both fingers")
    lift: float = Field(2.0, description="dense: per metre a held object rises (up to lift_height_m)")
    cost: float = Field(0.0, description="penalty times the per-step safety cost (both modes)")


class GraspTaskSpec(FrozenModel):
    kind: Literal["grasp"] = "grasp"
    object_split: ObjectSplit = Field(
        "train",
        description="which fixed set of object models: train (random URDFs 000-799 + box), validation "
        "(800-899 + cylinder; model selection), test (900-999 + capsule, sphere; reporting)",
    )
    n_objects: tuple[int, int] = Field((1, 5), description="objects per episode, drawn in [low, high]")
    shape_fraction: float = Field(0.2, ge=0, le=1, description="probability an object is a primitive shape")
    size_m: tuple[float, float] = Field((0.04, 0.07), description="longest side of each object, m")
    mass_kg: tuple[float, float] = Field((0.05, 0.3))
    spawn_half_m: float = Field(0.1, gt=0, le=0.14, description="object centres within +- this of the tray centre")
    friction: float = Field(1.0, gt=0, le=3)
    solver_iterations: int = Field(20, ge=5, le=200, description="PyBullet numSolverIterations for this cell (default 50 costs ~2x the physics time)")
    settle_s: float = Field(0.3, ge=0, le=3, description="objects settle at least this long (then until at rest, <= 2 s more) before the first step")
    camera_mount: Literal["shoulder", "wrist"] = Field(
        "shoulder",
        description="shoulder: sensors.camera.position_m/pitch/yaw are in the world frame (a fixed camera); "
        "wrist: they are in the gripper frame (origin between the fingertips, x away from the arm at yaw 0, "
        "y along the closing axis), so the camera moves and turns with the hand (eye-in-hand)",
    )
    assisted: bool = Field(False, description="automatic descend / close / lift; action = (dx, dy, dyaw)")
    max_step_m: float = Field(0.03, gt=0, le=0.1, description="end-effector translation per step at |a| = 1")
    max_yaw_step_rad: float = Field(0.3, gt=0, le=1.0)
    workspace_half_m: float = Field(0.15, gt=0, le=0.2, description="end-effector x, y within +- this of the tray centre")
    workspace_height_m: float = Field(0.3, gt=0.15, le=0.4, description="end-effector z at most this above the tray floor")
    start_height_m: float = Field(0.2, gt=0.05, le=0.4, description="end-effector height above the floor at the start")
    start_xy_m: float = Field(0.05, ge=0, le=0.1, description="random start offset of the end effector, +-")
    lift_height_m: float = Field(0.1, gt=0, le=0.3)
    hold_s: float = Field(0.5, ge=0, le=5)
    contact_force_limit_n: float = Field(60.0, gt=0, description="arm contact forces above this count as unsafe")
    time_limit_s: float = Field(8.0, gt=0)
    reward_mode: Literal["sparse", "dense"] = "sparse"
    reward: GraspRewardSpec = GraspRewardSpec()

    @model_validator(mode="after")
    def _ranges(self) -> "GraspTaskSpec":
        lo, hi = self.n_objects
        if not 1 <= lo <= hi <= 8:
            raise ValueError(f"n_objects must be [low, high] with 1 <= low <= high <= 8, got {self.n_objects}")
        lo, hi = self.size_m
        if not 0.02 <= lo <= hi <= 0.075:
            raise ValueError(f"size_m must be [low, high] with 0.02 <= low <= high <= 0.075 (the gripper opens 0.08 m), got {self.size_m}")
        lo, hi = self.mass_kg
        if not 0.01 <= lo <= hi <= 1.0:
            raise ValueError(f"mass_kg must be [low, high] with 0.01 <= low <= high <= 1.0, got {self.mass_kg}")
        if self.start_height_m > self.workspace_height_m:
            raise ValueError(f"start_height_m ({self.start_height_m}) must not exceed workspace_height_m ({self.workspace_height_m})")
        return self


@dataclass
class GraspStats:
    steps: int = 0
    held_s: dict = field(default_factory=dict)  # object index -> seconds lifted and touched in a row
    table_contacts: int = 0
    peak_force_n: float = 0.0
    joint_limit_hits: int = 0
    objects_out: int = 0
    prev_dist: float = 0.0
    prev_held: bool = False
    prev_lift: float = 0.0
    phase: str = "descend"  # assisted mode: descend -> close -> lift -> done
    phase_steps: int = 0
    success: bool = False
    success_object: str = ""


@dataclass
class GraspMeasures:
    """What one grasp step measured (the input of its reward terms, termination and info)."""

    lifts: np.ndarray  # each object's height above where it rested, m
    held_obj: int  # index of the object held between both fingers (the highest), -1 none
    table_contact: bool
    force: float  # largest contact normal force on the arm, N
    out: int  # objects out of the tray
    limit_hit: bool  # a joint at its limit
    cost: float  # per-step safety cost (0 or 1)


@register_task("grasp", GraspTaskSpec)
class GraspTask(Task):
    """Lift any object out of the tray and hold it (see the module docstring)."""

    family = "grasp"  # kai_drive.tasks.FAMILIES
    PROPRIO_FIELDS = PandaArm.PROPRIO_FIELDS

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.t = spec.task
        self.control_hz = spec.world.control_hz
        self.models = object_models(self.t.object_split)
        n_urdf = sum(1 for m in self.models if m.startswith("urdf/"))
        self._urdf_models, self._shape_models = self.models[:n_urdf], self.models[n_urdf:]
        n = 3 if self.t.assisted else 5
        self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.ego: PandaArm | None = None
        self.objects: list[Spawned] = []
        self.rest_z: np.ndarray = np.zeros(0)
        self.stats = GraspStats()
        self._world: World | None = None
        self._mount = Mount(np.zeros(3), np.eye(3), 0.0)
        h = self.t.workspace_half_m
        self.ws_low = np.array([-h, -h, FLOOR_Z + 0.012, -math.pi / 2])
        self.ws_high = np.array([h, h, FLOOR_Z + self.t.workspace_height_m, math.pi / 2])

    # -- scenario --------------------------------------------------------------------------------
    def build(self, world: World, rng: np.random.Generator) -> dict[str, Any]:
        t = self.t
        c = world.client
        self._world = world
        c.setPhysicsEngineParameter(numSolverIterations=t.solver_iterations)
        # the floor collides but is not drawn: a visible floor plane would cost ~40 % of the camera time
        floor = c.createMultiBody(0.0, c.createCollisionShape(pybullet.GEOM_PLANE), -1, [0, 0, 0])
        c.changeVisualShape(floor, -1, rgbaColor=[1, 1, 1, 0])  # PyBullet draws a plane by default
        world.add_body("ground", floor, kind="ground")
        world.add_body("table", c.loadURDF(os.path.join(_DATA, "table/table.urdf"), [0, 0, 0], useFixedBase=True), kind="table")
        world.add_body(
            "tray",
            c.loadURDF(os.path.join(_DATA, "tray/traybox.urdf"), TRAY_CENTER.tolist(), useFixedBase=True, globalScaling=TRAY_SCALE),
            kind="tray",
        )
        origin = (TRAY_CENTER[0], TRAY_CENTER[1], FLOOR_Z)
        self.ego = PandaArm(c, ARM_BASE, origin=origin)
        world.add_body("arm", self.ego.body_id, kind="ego")
        # start pose: above the tray, gripper open, teleported exactly (IK refined from its own result)
        sx, sy = rng.uniform(-t.start_xy_m, t.start_xy_m, size=2)
        start = (float(sx), float(sy), FLOOR_Z + t.start_height_m, 0.0)
        for _ in range(4):
            self.ego.reset_joints(self.ego.solve_ik(*start))
        self.ego.move_to(*start)

        n = int(rng.integers(t.n_objects[0], t.n_objects[1] + 1))
        records = self._spawn_objects(world, rng, n)
        # settle: at least settle_s, then until every object is at rest (at most 2 s more)
        for k in range(int(round((t.settle_s + 2.0) * self.control_hz))):
            world.step()
            if (k + 1) / self.control_hz >= t.settle_s - 1e-9 and self._at_rest():
                break
        self.rest_z = np.array([c.getBasePositionAndOrientation(o.body_id)[0][2] for o in self.objects])
        self._obj_ids = {o.body_id: i for i, o in enumerate(self.objects)}
        self._table = world.body("table")
        self.stats = GraspStats()
        self.stats.prev_dist = self._nearest_distance()
        return {"object_split": t.object_split, "n_objects": n, "objects": records, "start_ee": list(start)}

    def _spawn_objects(self, world: World, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        """Drop ``n`` objects drawn from the split into the tray (free spots first); their records."""
        t, c = self.t, world.client
        self.objects = []
        placed: list[tuple[float, float, float]] = []  # x, y, radius
        records = []
        for i in range(n):
            if self._shape_models and rng.random() < t.shape_fraction:
                model = self._shape_models[int(rng.integers(len(self._shape_models)))]
            else:
                model = self._urdf_models[int(rng.integers(len(self._urdf_models)))]
            size = float(rng.uniform(*t.size_m))
            mass = float(rng.uniform(*t.mass_kg))
            color = (*(0.15 + 0.8 * rng.random(3)).tolist(), 1.0)
            yaw = float(rng.uniform(-math.pi, math.pi))
            unit = load_model(model)
            radius = float(np.linalg.norm(unit.points[:, :2], axis=1).max() * size / unit.extent.max())
            xy, lift = None, 0.0
            for _ in range(30):  # rejection-sample a free spot; stack (drop from higher) if none
                cand = rng.uniform(-t.spawn_half_m, t.spawn_half_m, size=2)
                if all(math.hypot(cand[0] - x, cand[1] - y) > radius + r for x, y, r in placed):
                    xy = cand
                    break
            if xy is None:  # no free spot: drop it onto the others
                xy, lift = cand, 0.06
            placed.append((float(xy[0]), float(xy[1]), radius))
            obj = spawn_object(c, model, size, mass, color, xy, FLOOR_Z + lift, yaw, friction=t.friction)
            world.add_body(f"object{i}", obj.body_id, kind="object")
            self.objects.append(obj)
            records.append(
                {"model": model, "size_m": size, "mass_kg": mass, "color": list(color[:3]),
                 "x_m": float(xy[0]), "y_m": float(xy[1]), "yaw_rad": yaw}
            )
        return records

    # -- what sensors and the renderer need ------------------------------------------------------
    def sensor_mount(self, world: World) -> Mount:
        """``camera_mount: shoulder``: the camera is fixed in the workcell (the mount is the world frame);
        ``wrist``: the mount is the gripper frame (between the fingertips, turned by the gripper's yaw)."""
        if self.t.camera_mount == "shoulder":
            return self._mount
        x, y, z, yaw = self.ego.ee_pose()
        c, s = math.cos(yaw), math.sin(yaw)
        return Mount(np.array([x, y, z]), np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]), 0.0)

    def chase_view(self, distance_m: float, height_m: float) -> tuple[list[float], list[float]]:
        """A view of the workcell from the front-right, ``distance_m`` from the tray, ``height_m`` high."""
        a = math.radians(-35.0)
        eye = [TRAY_CENTER[0] + distance_m * math.cos(a), TRAY_CENTER[1] + distance_m * math.sin(a), height_m]
        return eye, [TRAY_CENTER[0] - 0.15, TRAY_CENTER[1], TABLE_TOP_Z + 0.1]

    # -- step ------------------------------------------------------------------------------------
    def apply(self, action: np.ndarray, dt: float) -> None:
        t, arm, st = self.t, self.ego, self.stats
        target = arm.target.copy()
        if not t.assisted:
            target[:3] += np.asarray(action[:3], dtype=np.float64) * t.max_step_m
            target[3] += float(action[3]) * t.max_yaw_step_rad
            arm.set_gripper(0.0 if action[4] > 0 else MAX_OPENING_M)
        else:
            st.phase_steps += 1
            if st.phase == "descend":
                target[:2] += np.asarray(action[:2], dtype=np.float64) * t.max_step_m
                target[3] += float(action[2]) * t.max_yaw_step_rad
                target[2] -= 0.5 * t.max_step_m
                if target[2] <= self.ws_low[2] + 1e-6:
                    st.phase, st.phase_steps = "close", 0
            elif st.phase == "close":
                arm.set_gripper(0.0)
                if st.phase_steps * dt >= 0.4:
                    st.phase, st.phase_steps = "lift", 0
            elif st.phase == "lift":
                target[2] += t.max_step_m
                if target[2] >= FLOOR_Z + t.lift_height_m + 0.1 and st.phase_steps * dt >= t.hold_s + 0.3:
                    st.phase, st.phase_steps = "done", 0
        target[:3] -= TRAY_CENTER * [1, 1, 0]
        target = np.clip(target, self.ws_low, self.ws_high)
        target[:3] += TRAY_CENTER * [1, 1, 0]
        arm.move_to(*target)

    def _at_rest(self, speed_mps: float = 0.02, spin_radps: float = 0.5) -> bool:
        c = self._world.client
        for o in self.objects:
            v, w = c.getBaseVelocity(o.body_id)
            if np.linalg.norm(v) > speed_mps or np.linalg.norm(w) > spin_radps:
                return False
        return True

    def _nearest_distance(self) -> float:
        c = self._world.client
        ee = self.ego.ee_pose()[:3]
        best = 1.0
        for o in self.objects:
            pos = np.asarray(c.getBasePositionAndOrientation(o.body_id)[0])
            best = min(best, float(np.linalg.norm(pos - ee)))
        return best

    # evaluate() is Task's: _measure -> _reward_terms, _terminated, _info
    def _measure(self, world: World, action: np.ndarray, dt: float) -> "GraspMeasures":
        t, st, c, arm = self.t, self.stats, world.client, self.ego
        st.steps += 1
        table_contact, force, touched = self._arm_contacts(c)
        st.table_contacts += int(table_contact)
        st.peak_force_n = max(st.peak_force_n, force)
        limit_hit = arm.at_joint_limit()
        st.joint_limit_hits += int(limit_hit)

        lifts, out = self._object_lifts(c)
        newly_out = out > st.objects_out
        st.objects_out = out

        held_obj = -1
        for i in range(len(self.objects)):
            if i in touched and lifts[i] >= t.lift_height_m:
                st.held_s[i] = st.held_s.get(i, 0.0) + dt
            else:
                st.held_s[i] = 0.0
            if st.held_s[i] >= t.hold_s - 1e-9 and not st.success:
                st.success, st.success_object = True, self.objects[i].model
        grasped = [i for i, links in touched.items() if len(links) == 2]
        if grasped:
            held_obj = max(grasped, key=lambda i: lifts[i])
        cost = float(table_contact or force > t.contact_force_limit_n or newly_out or limit_hit)
        return GraspMeasures(lifts=lifts, held_obj=held_obj, table_contact=table_contact, force=force, out=out,
                             limit_hit=limit_hit, cost=cost)

    def _reward_terms(self, m: "GraspMeasures") -> dict[str, float]:
        """Success and safety cost (both modes); dense mode adds reach, grasp and lift shaping."""
        t, w, st = self.t, self.t.reward, self.stats
        terms = {"success": w.success if st.success else 0.0, "cost": -w.cost * m.cost}
        if t.reward_mode == "dense":
            dist = self._nearest_distance()
            lift = float(np.clip(m.lifts[m.held_obj], 0.0, t.lift_height_m)) if m.held_obj >= 0 else 0.0
            held = m.held_obj >= 0
            terms["reach"] = w.reach * (st.prev_dist - dist)
            terms["grasp"] = w.grasp * (float(held) - float(st.prev_held))
            terms["lift"] = w.lift * (lift - st.prev_lift)
            st.prev_dist, st.prev_held, st.prev_lift = dist, held, lift
        return terms

    def _terminated(self, m: "GraspMeasures") -> bool:
        """Success, every object out of the tray, or (assisted) the lift is over."""
        t, st = self.t, self.stats
        return bool(st.success or m.out == len(self.objects) or (t.assisted and st.phase == "done"))

    def _arm_contacts(self, c: Any) -> tuple[bool, float, dict[int, set[int]]]:
        """Contacts of the arm (one PyBullet call): ``(table touched, largest normal force N, object index ->
        finger links touching it)``."""
        table_contact = False
        force = 0.0
        touched: dict[int, set[int]] = {}
        for cp in c.getContactPoints(bodyA=self.ego.body_id):
            other, link = cp[2], cp[3]
            force = max(force, cp[9])
            if other == self._table:
                table_contact = True
            elif other in self._obj_ids and link in (9, 10):
                touched.setdefault(self._obj_ids[other], set()).add(link)
        return table_contact, force, touched

    def _object_lifts(self, c: Any) -> tuple[np.ndarray, int]:
        """Each object's lift above its rest height (m), and how many were knocked out of the tray."""
        out = 0
        lifts = np.zeros(len(self.objects))
        for i, o in enumerate(self.objects):
            pos = c.getBasePositionAndOrientation(o.body_id)[0]
            lifts[i] = pos[2] - self.rest_z[i]
            if max(abs(pos[0] - TRAY_CENTER[0]), abs(pos[1] - TRAY_CENTER[1])) > TRAY_RIM_HALF_M or pos[2] < FLOOR_Z - 0.03:
                out += 1
        return lifts, out

    def _info(self, m: "GraspMeasures", terms: dict[str, float]) -> dict[str, Any]:
        t, st, arm = self.t, self.stats, self.ego
        ee = arm.ee_pose()
        return {
            "is_success": st.success,
            "object": st.success_object,
            "grasped": m.held_obj >= 0,
            "max_lift_m": float(m.lifts.max()) if len(m.lifts) else 0.0,
            "ee_pos_m": (ee[:3] - np.array([TRAY_CENTER[0], TRAY_CENTER[1], FLOOR_Z])).tolist(),
            "gripper_opening_m": arm.gripper_opening(),
            "table_contact": m.table_contact,
            "table_contacts": st.table_contacts,
            "contact_force_n": float(m.force),
            "peak_contact_force_n": st.peak_force_n,
            "objects_out": m.out,
            "joint_limit_hit": m.limit_hit,
            "joint_limit_hits": st.joint_limit_hits,
            "cost": m.cost,
            "phase": st.phase if t.assisted else "",
            "reward_terms": terms,
        }

    def reset_info(self) -> dict:
        ee = self.ego.ee_pose()
        return {
            "is_success": False,
            "object": "",
            "grasped": False,
            "max_lift_m": 0.0,
            "ee_pos_m": (ee[:3] - np.array([TRAY_CENTER[0], TRAY_CENTER[1], FLOOR_Z])).tolist(),
            "gripper_opening_m": self.ego.gripper_opening(),
            "objects_out": 0,
        }

    # -- branching rollouts (KaiEnv.save_state / restore_state) ----------------------------------
    def save_state(self) -> dict:
        """Python-side state that PyBullet's saveState does not hold (counters, motor targets)."""
        arm = self.ego
        return {
            "stats": copy.deepcopy(self.stats),
            "target": arm.target.copy(),
            "q_target": arm.q_target.copy(),
            "gripper_target_m": arm.gripper_target_m,
        }

    def restore_state(self, state: dict) -> None:
        self.stats = copy.deepcopy(state["stats"])
        arm = self.ego
        arm.target = state["target"].copy()
        arm.q_target = state["q_target"].copy()
        arm._hold(arm.q_target)  # motor targets are not part of a PyBullet snapshot
        arm.set_gripper(state["gripper_target_m"])

    # -- privileged access for scripted policies and tests ---------------------------------------
    def object_points_world(self, index: int) -> np.ndarray:
        """Points (N, 3) of object ``index`` in the world frame at its current pose (privileged)."""
        return object_points(self._world.client, self.objects[index])
