"""A Franka Emika Panda arm with its two-finger gripper (pybullet_data's ``franka_panda/panda.urdf``),
driven by end-effector Cartesian targets through PyBullet's inverse kinematics.

Frames and links (joint index = link index):

====  ======================  =========================================================
idx   link                    joint
====  ======================  =========================================================
0-6   panda_link1..7          revolute (the 7 arm joints, position-controlled)
7, 8  panda_link8, panda_hand fixed
9     panda_leftfinger        prismatic 0..0.04 m (each finger; opening = sum of both)
10    panda_rightfinger       prismatic 0..0.04 m
11    panda_grasptarget       fixed, 0.105 m along the hand's z axis: between the fingertips
====  ======================  =========================================================

The end effector ("ee") is the grasp-target point between the fingertips. The gripper always points
straight down; its yaw (rad, about world z) is the free rotation. ``yaw = 0`` closes the fingers
along the world y axis; the gripper is symmetric under ``yaw + pi`` so yaw lives in ``[-pi/2, pi/2]``.

Loading speed: the stock URDF's visual meshes are 9 MB of OBJ and take ~100 ms to load on every
reset. :func:`light_panda_urdf` writes (once per machine) a copy whose visuals are the 0.4 MB
collision meshes, coloured after loading; collision geometry, masses and joints are unchanged.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet_data

from kai_drive.sim.bullet import pybullet

__all__ = ["ArmParams", "PandaArm", "light_panda_urdf", "down_quaternion"]

ARM_JOINTS = tuple(range(7))
FINGER_JOINTS = (9, 10)
HAND_LINK = 8
EE_LINK = 11
FINGER_LINKS = (9, 10)
#: a comfortable pose with the gripper pointing down over the workspace (used for IK's null space)
HOME_Q = (0.0, 0.2, 0.0, -2.2, 0.0, 2.4, 0.785)
MAX_OPENING_M = 0.08


@dataclass(frozen=True)
class ArmParams:
    """Actuator settings of the Panda (SI units)."""

    arm_force_n: tuple = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)  # joint torque limits, N m
    finger_force_n: float = 40.0  # per finger, N
    finger_speed_mps: float = 0.1  # per finger
    position_gain: float = 0.1  # PyBullet POSITION_CONTROL gains
    velocity_gain: float = 1.0
    joint_speed_radps: float = 2.0  # max joint velocity while tracking a target
    ik_iterations: int = 20


def light_panda_urdf() -> str:
    """Path of a Panda URDF whose visuals are the (small) collision meshes; written once, cached."""
    src = Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"
    text = src.read_text()
    mesh_dir = (src.parent / "meshes" / "collision").as_posix() + "/"
    light = text.replace("package://meshes/visual/", mesh_dir).replace("package://meshes/collision/", mesh_dir)
    digest = hashlib.sha1(light.encode()).hexdigest()[:12]
    folder = Path(tempfile.gettempdir()) / f"kai_drive-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    path = folder / f"panda_light_{digest}.urdf"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_text(light)
        os.replace(tmp, path)  # atomic: parallel workers never read half a file
    return str(path)


def down_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """Orientation of the grasp frame pointing straight down with the given yaw (rad)."""
    # roll = pi flips z down; the hand is mounted at -45 deg on link 8, PyBullet's IK works on link 11
    return tuple(pybullet.getQuaternionFromEuler((math.pi, 0.0, yaw)))


class PandaArm:
    """The Panda on a fixed base, commanded by an end-effector target ``(x, y, z, yaw)`` and a gripper.

    Args:
        client: the world's ``BulletClient``.
        base_position: world position of the arm's base (m).
        params: actuator settings.
        home_q: initial arm joint angles (rad).
        origin: world point that :meth:`proprioception` reports positions relative to (e.g. the
            centre of the tray floor), so the "state" is independent of where the cell stands.
    """

    PROPRIO_FIELDS = (
        "ee_x_m",  # end effector (between the fingertips), relative to `origin`
        "ee_y_m",
        "ee_z_m",
        "ee_yaw_rad",  # gripper yaw in [-pi/2, pi/2]
        "gripper_opening_m",  # distance between the fingers, 0..0.08
        "q1_rad",
        "q2_rad",
        "q3_rad",
        "q4_rad",
        "q5_rad",
        "q6_rad",
        "q7_rad",
    )

    def __init__(
        self,
        client,
        base_position=(0.0, 0.0, 0.0),
        params: ArmParams = ArmParams(),
        home_q=HOME_Q,
        origin=(0.0, 0.0, 0.0),
    ) -> None:
        self.client = client
        self.params = params
        self.origin = np.asarray(origin, dtype=np.float64)
        self.body_id = client.loadURDF(
            light_panda_urdf(),
            list(base_position),
            [0, 0, 0, 1],
            useFixedBase=True,
            flags=pybullet.URDF_USE_INERTIA_FROM_FILE,
        )
        self.base_position = np.asarray(base_position, dtype=np.float64)
        info = [client.getJointInfo(self.body_id, j) for j in ARM_JOINTS]
        self.lower = np.array([i[8] for i in info])
        self.upper = np.array([i[9] for i in info])
        self.home_q = np.asarray(home_q, dtype=np.float64)
        for j, q in zip(ARM_JOINTS, self.home_q):
            client.resetJointState(self.body_id, j, float(q))
        for j in FINGER_JOINTS:
            client.resetJointState(self.body_id, j, MAX_OPENING_M / 2)
        # colours: white links, dark hand and fingers (the light URDF carries no textures)
        for link in range(-1, 8):
            client.changeVisualShape(self.body_id, link, rgbaColor=(0.92, 0.92, 0.92, 1.0))
        for link in (HAND_LINK, *FINGER_LINKS):
            client.changeVisualShape(self.body_id, link, rgbaColor=(0.2, 0.2, 0.22, 1.0))
        for link in FINGER_LINKS:
            client.changeDynamics(
                self.body_id, link, lateralFriction=1.5, spinningFriction=0.01, frictionAnchor=True
            )
        # the two fingers move together
        c = client.createConstraint(
            self.body_id, 9, self.body_id, 10, pybullet.JOINT_GEAR, [1, 0, 0], [0, 0, 0], [0, 0, 0]
        )
        client.changeConstraint(c, gearRatio=-1, erp=0.1, maxForce=50)
        self._ik_lower = list(self.lower) + [0.0, 0.0]
        self._ik_upper = list(self.upper) + [0.04, 0.04]
        self._ik_range = [u - l for u, l in zip(self._ik_upper, self._ik_lower)]
        self._ik_rest = list(self.home_q) + [0.02, 0.02]
        self.target = self.ee_pose()  # (x, y, z, yaw) world frame
        self.gripper_target_m = MAX_OPENING_M
        self.q_target = self.home_q.copy()
        self._hold(self.home_q)
        self.set_gripper(MAX_OPENING_M)

    # -- reading ---------------------------------------------------------------------------------
    def ee_pose(self) -> np.ndarray:
        """``(x, y, z, yaw)`` of the grasp point in the world frame (m, rad)."""
        st = self.client.getLinkState(self.body_id, EE_LINK, computeForwardKinematics=True)
        pos, orn = st[4], st[5]
        rot = np.asarray(self.client.getMatrixFromQuaternion(orn)).reshape(3, 3)
        # the closing axis is the hand's y axis; yaw is its angle from world y, folded into [-pi/2, pi/2]
        ay = rot[:, 1]
        yaw = math.atan2(-ay[0], ay[1])
        yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
        return np.array([pos[0], pos[1], pos[2], yaw])

    def closing_axis(self) -> np.ndarray:
        """Unit vector (world frame) along which the fingers close."""
        orn = self.client.getLinkState(self.body_id, EE_LINK, computeForwardKinematics=True)[5]
        return np.asarray(self.client.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 1]

    def joint_positions(self) -> np.ndarray:
        return np.array([s[0] for s in self.client.getJointStates(self.body_id, ARM_JOINTS)])

    def gripper_opening(self) -> float:
        """Distance between the two fingers (m), 0 closed, 0.08 fully open."""
        s = self.client.getJointStates(self.body_id, FINGER_JOINTS)
        return float(s[0][0] + s[1][0])

    def proprioception(self) -> np.ndarray:
        ee = self.ee_pose()
        rel = ee[:3] - self.origin
        return np.concatenate(([rel[0], rel[1], rel[2], ee[3], self.gripper_opening()], self.joint_positions())).astype(
            np.float32
        )

    def at_joint_limit(self, margin_rad: float = 0.02) -> bool:
        """True when an arm joint is within ``margin_rad`` of one of its limits."""
        q = self.joint_positions()
        return bool(np.any(q < self.lower + margin_rad) or np.any(q > self.upper - margin_rad))

    # -- commanding ------------------------------------------------------------------------------
    def solve_ik(self, x: float, y: float, z: float, yaw: float) -> np.ndarray:
        """Arm joint angles (7,) that put the grasp point at ``(x, y, z)`` pointing down with ``yaw``."""
        sol = self.client.calculateInverseKinematics(
            self.body_id,
            EE_LINK,
            [x, y, z],
            down_quaternion(yaw),
            lowerLimits=self._ik_lower,
            upperLimits=self._ik_upper,
            jointRanges=self._ik_range,
            restPoses=self._ik_rest,
            maxNumIterations=self.params.ik_iterations,
            residualThreshold=1e-4,
        )
        return np.clip(np.asarray(sol[:7]), self.lower, self.upper)

    def move_to(self, x: float, y: float, z: float, yaw: float) -> None:
        """Set the end-effector target (world frame) and the joint targets that reach it."""
        self.target = np.array([x, y, z, yaw], dtype=np.float64)
        self.q_target = self.solve_ik(x, y, z, yaw)
        self._hold(self.q_target)

    def _hold(self, q: np.ndarray) -> None:
        p = self.params
        self.client.setJointMotorControlArray(
            self.body_id,
            ARM_JOINTS,
            pybullet.POSITION_CONTROL,
            targetPositions=list(q),
            forces=list(p.arm_force_n),
            positionGains=[p.position_gain] * 7,
            velocityGains=[p.velocity_gain] * 7,
        )

    def set_gripper(self, opening_m: float) -> None:
        """Drive the fingers toward an opening (m, 0..0.08) with the finger force limit."""
        opening_m = float(min(max(opening_m, 0.0), MAX_OPENING_M))
        self.gripper_target_m = opening_m
        p = self.params
        self.client.setJointMotorControlArray(
            self.body_id,
            FINGER_JOINTS,
            pybullet.POSITION_CONTROL,
            targetPositions=[opening_m / 2] * 2,
            forces=[p.finger_force_n] * 2,
            positionGains=[0.05] * 2,
        )

    def reset_joints(self, q) -> None:
        """Teleport the arm to joint angles ``q`` (rad) and hold them (for tests and scripted setups)."""
        for j, qj in zip(ARM_JOINTS, q):
            self.client.resetJointState(self.body_id, j, float(qj))
        self.q_target = np.asarray(q, dtype=np.float64)
        self._hold(self.q_target)
        self.target = self.ee_pose()
