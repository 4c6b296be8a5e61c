"""The ego car: a passenger-car-scale PyBullet multibody with steered front wheels and driven rear wheels.

The chassis is the base link; its frame origin is the centre of mass (so ``getBasePositionAndOrientation``
gives the chassis pose directly), x forward, y left, z up. Links (joint index = link index):

====  ==================  ==========================  =================================
idx   link                parent                      joint
====  ==================  ==========================  =================================
0     front-left knuckle  chassis                     revolute about z (steering)
1     front-left wheel    front-left knuckle          revolute about y (spin)
2     front-right knuckle chassis                     revolute about z (steering)
3     front-right wheel   front-right knuckle         revolute about y (spin)
4     rear-left wheel     chassis                     revolute about y (spin, driven)
5     rear-right wheel    chassis                     revolute about y (spin, driven)
====  ==================  ==========================  =================================

There is no suspension: the tyres are rigid cylinders with a slightly compliant contact. Grip comes
from Bullet's Coulomb friction at the wheel-ground contacts (wheel lateralFriction times the ground's).

Actuation (all through two ``setJointMotorControlArray`` calls per control step):

* steering: the rate-limited angle of a virtual centre wheel is turned into Ackermann angles of the
  two knuckles, which track them under position control;
* drive (rear wheels): velocity control toward ``max_speed / r`` with the drive torque as the motor's
  force limit, i.e. a torque source with a speed cap. The torque is capped by ``max_drive_power_w``;
* brakes / rolling and aerodynamic resistance: velocity control toward 0 with the brake torque (plus
  the resistance torque) as the force limit, i.e. a Coulomb brake that also holds the car at rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kai_drive.sim.bullet import pybullet

__all__ = ["VehicleParams", "VehicleState", "Vehicle"]

_G = 9.81
_AIR_DENSITY = 1.2


@dataclass(frozen=True)
class VehicleParams:
    """Geometry, mass and actuator limits of the car (SI units)."""

    length_m: float = 4.5
    width_m: float = 1.8
    height_m: float = 1.45
    mass_kg: float = 1500.0  # total, wheels and knuckles included
    wheelbase_m: float = 2.7
    track_m: float = 1.55
    wheel_radius_m: float = 0.33
    wheel_width_m: float = 0.22
    max_steer_rad: float = 0.6  # virtual centre wheel
    max_steer_rate_radps: float = 1.0
    max_drive_torque_nm: float = 1700.0  # total at the (rear) driven wheels
    max_drive_power_w: float = 110_000.0  # at the wheels: caps the torque above ~21 m/s
    max_brake_torque_nm: float = 3800.0  # total over the four wheels
    brake_front_share: float = 0.62  # fraction of brake torque on the front axle
    max_speed_mps: float = 35.0
    cg_height_m: float = 0.55  # centre of mass above the ground
    wheel_mass_kg: float = 20.0
    knuckle_mass_kg: float = 5.0
    tire_friction: float = 0.95  # lateralFriction of the wheels (combined with the ground's by product)
    rolling_resistance_coeff: float = 0.015
    drag_area_m2: float = 0.65  # Cd * frontal area
    steer_motor_torque_nm: float = 3000.0
    color: tuple = (0.1, 0.3, 0.8, 1.0)


@dataclass
class VehicleState:
    """Chassis state in SI units; pose in the world frame, velocities in the body frame."""

    x: float
    y: float
    z: float
    yaw: float
    speed_mps: float  # signed longitudinal speed, + forward
    lateral_speed_mps: float  # + left
    yaw_rate_radps: float  # + counter-clockwise
    steer_rad: float  # current rate-limited angle of the virtual centre wheel, + left


# joint indices
_FL_STEER, _FL_WHEEL, _FR_STEER, _FR_WHEEL, _RL_WHEEL, _RR_WHEEL = range(6)
_STEER_JOINTS = [_FL_STEER, _FR_STEER]
_WHEEL_JOINTS = [_FL_WHEEL, _FR_WHEEL, _RL_WHEEL, _RR_WHEEL]


class Vehicle:
    """One car in one PyBullet world.

    ``PROPRIO_FIELDS`` names the entries of :meth:`proprioception` (the env's "state" observation).

    Args:
        client: a ``pybullet_utils.bullet_client.BulletClient``; every PyBullet call goes through it.
        params: geometry and limits.
        x, y, yaw: initial pose of the chassis centre (m, rad); the car is placed on z = 0 ground.
        speed_mps: initial forward speed (wheels spun to match).

    Attributes:
        body_id: the PyBullet body id (one multibody; the chassis is its base, link index -1).
        params: the :class:`VehicleParams`.
        steer_rad: the current rate-limited virtual steering angle (Python-side state: call
            :meth:`sync_from_sim` after ``restoreState``).
        cg_to_front_axle_m, cg_to_rear_axle_m: longitudinal distances from the chassis origin (centre
            of mass) to the axles.
        spawn_z: height of the chassis origin when resting on flat z = 0 ground.
    """

    PROPRIO_FIELDS: tuple[str, ...] = (
        "speed_mps",  # signed longitudinal speed
        "yaw_rate_radps",
        "steer_rad",  # current (rate-limited) steering angle
        "accel_long_mps2",  # change of speed over the last control step / dt
        "accel_lat_mps2",  # speed * yaw rate
        "prev_steer",  # last steering command, [-1, 1]
        "prev_throttle",  # last throttle (> 0) / brake (< 0) command, [-1, 1]
    )

    def __init__(
        self,
        client,
        params: VehicleParams = VehicleParams(),
        x: float = 0.0,
        y: float = 0.0,
        yaw: float = 0.0,
        speed_mps: float = 0.0,
    ) -> None:
        self.client = client
        self.params = params
        p = params
        self.cg_to_front_axle_m = 0.5 * p.wheelbase_m
        self.cg_to_rear_axle_m = 0.5 * p.wheelbase_m
        self.spawn_z = p.cg_height_m + 0.002
        self.steer_rad = 0.0
        self.last_command: tuple[float, float] = (0.0, 0.0)  # (steer, throttle_brake) as last commanded
        self._cmd_dt = 0.0
        self._speed_at_cmd = 0.0
        self.body_id = self._build()
        self._cid = client._client  # physics client id, for the hot path
        # precomputed constants of the hot path
        r = p.wheel_radius_m
        self._r = r
        self._drive_target = p.max_speed_mps / r
        self._roll_torque = p.rolling_resistance_coeff * p.mass_kg * _G * r  # total, N m
        self._aero_k = 0.5 * _AIR_DENSITY * p.drag_area_m2 * r  # total torque per (m/s)^2
        self._half_l = 0.5 * p.wheelbase_m
        self._half_t = 0.5 * p.track_m
        self._steer_gains = [0.5, 0.5]
        self._set_motors = pybullet.setJointMotorControlArray
        self._get_vel = pybullet.getBaseVelocity
        self._get_engine_params = pybullet.getPhysicsEngineParameters
        self.reset(x, y, yaw, speed_mps)

    # -- construction ----------------------------------------------------------------------------
    #: the chassis' lower body spans this height above the ground, m (clearance .. top of the bonnet)
    _BODY_Z = (0.18, 0.95)

    def _build(self) -> int:
        c = self.client
        p = self.params
        r, w = p.wheel_radius_m, p.wheel_width_m
        h = p.cg_height_m
        chassis_col, chassis_vis = self._chassis_shapes()
        # wheels: cylinders whose axis (z in Bullet) is turned onto the body's y axis
        axis_to_y = c.getQuaternionFromEuler([math.pi / 2, 0.0, 0.0])
        wheel_col = c.createCollisionShape(
            pybullet.GEOM_CYLINDER, radius=r, height=w, collisionFrameOrientation=axis_to_y
        )
        wheel_vis = c.createVisualShape(
            pybullet.GEOM_CYLINDER, radius=r, length=w, visualFrameOrientation=axis_to_y,
            rgbaColor=[0.08, 0.08, 0.08, 1.0],
        )
        a = 0.5 * p.wheelbase_m
        yt = 0.5 * p.track_m
        zw = r - h  # wheel centre relative to the centre of mass
        wm, km = p.wheel_mass_kg, p.knuckle_mass_kg
        chassis_mass = p.mass_kg - 4 * wm - 2 * km
        if chassis_mass <= 0:
            raise ValueError("mass_kg must exceed the wheels' and knuckles' masses")
        rev = pybullet.JOINT_REVOLUTE
        link_masses = [km, wm, km, wm, wm, wm]
        link_cols = [-1, wheel_col, -1, wheel_col, wheel_col, wheel_col]
        link_vis = [-1, wheel_vis, -1, wheel_vis, wheel_vis, wheel_vis]
        link_pos = [[a, yt, zw], [0, 0, 0], [a, -yt, zw], [0, 0, 0], [-a, yt, zw], [-a, -yt, zw]]
        link_parents = [0, 1, 0, 3, 0, 0]
        link_axes = [[0, 0, 1], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0], [0, 1, 0]]
        n = 6
        body = c.createMultiBody(
            baseMass=chassis_mass,
            baseCollisionShapeIndex=chassis_col,
            baseVisualShapeIndex=chassis_vis,
            basePosition=[0.0, 0.0, self.spawn_z],
            baseOrientation=[0, 0, 0, 1],
            linkMasses=link_masses,
            linkCollisionShapeIndices=link_cols,
            linkVisualShapeIndices=link_vis,
            linkPositions=link_pos,
            linkOrientations=[[0, 0, 0, 1]] * n,
            linkInertialFramePositions=[[0, 0, 0]] * n,
            linkInertialFrameOrientations=[[0, 0, 0, 1]] * n,
            linkParentIndices=link_parents,
            linkJointTypes=[rev] * n,
            linkJointAxis=link_axes,
        )
        if body < 0:
            raise RuntimeError("PyBullet failed to create the vehicle multibody")
        self._set_dynamics(body, chassis_mass)
        return body

    def _chassis_shapes(self) -> tuple[int, int]:
        """Collision and visual shapes of the chassis: a lower body and a cabin up to the roof."""
        c = self.client
        p = self.params
        h = p.cg_height_m
        body_lo, body_hi = self._BODY_Z
        cabin_len = 0.55 * p.length_m
        lower_half = [0.5 * p.length_m, 0.5 * p.width_m, 0.5 * (body_hi - body_lo)]
        lower_pos = [0.0, 0.0, 0.5 * (body_lo + body_hi) - h]
        cabin_half = [0.5 * cabin_len, 0.5 * p.width_m - 0.08, 0.5 * (p.height_m - body_hi)]
        cabin_pos = [-0.1 * p.length_m, 0.0, 0.5 * (body_hi + p.height_m) - h]
        chassis_col = c.createCollisionShapeArray(
            shapeTypes=[pybullet.GEOM_BOX, pybullet.GEOM_BOX],
            halfExtents=[lower_half, cabin_half],
            collisionFramePositions=[lower_pos, cabin_pos],
        )
        glass = (0.15, 0.18, 0.22, 1.0)
        chassis_vis = c.createVisualShapeArray(
            shapeTypes=[pybullet.GEOM_BOX, pybullet.GEOM_BOX],
            halfExtents=[lower_half, cabin_half],
            visualFramePositions=[lower_pos, cabin_pos],
            rgbaColors=[list(p.color), list(glass)],
        )
        return chassis_col, chassis_vis

    def _set_dynamics(self, body: int, chassis_mass: float) -> None:
        """Inertias, friction and damping of every link; wheels never collide with the chassis."""
        c = self.client
        p = self.params
        r, w = p.wheel_radius_m, p.wheel_width_m
        wm = p.wheel_mass_kg
        # inertias (Bullet's estimate for compound shapes is a bounding box: set them explicitly)
        body_lo, body_hi = self._BODY_Z
        L, W, H = p.length_m, p.width_m, body_hi - body_lo + 0.3
        m = chassis_mass
        c.changeDynamics(
            body, -1,
            localInertiaDiagonal=[m / 12 * (W * W + H * H), m / 12 * (L * L + H * H), m / 12 * (L * L + W * W)],
            linearDamping=0.0, angularDamping=0.0, lateralFriction=0.5, restitution=0.0,
        )
        i_spin = 0.5 * wm * r * r
        i_tilt = wm / 12 * (3 * r * r + w * w)
        for j in _WHEEL_JOINTS:
            c.changeDynamics(
                body, j,
                localInertiaDiagonal=[i_tilt, i_spin, i_tilt],
                lateralFriction=p.tire_friction, spinningFriction=0.0, rollingFriction=0.0,
                restitution=0.0, linearDamping=0.0, angularDamping=0.0, jointDamping=0.0,
                frictionAnchor=1,
            )
        for j in _STEER_JOINTS:
            c.changeDynamics(body, j, localInertiaDiagonal=[0.05, 0.05, 0.05], linearDamping=0.0,
                             angularDamping=0.0, jointDamping=0.0)
        # wheels must not touch the chassis (there are no wheel arches in the box shape)
        for j in _WHEEL_JOINTS:
            c.setCollisionFilterPair(body, body, -1, j, 0)

    # -- control ---------------------------------------------------------------------------------
    def apply_control(self, steer: float, throttle_brake: float, dt: float) -> None:  # long: per-step hot path, one frame
        """Command the car for one control step of ``dt`` seconds.

        Args:
            steer: in [-1, 1] (+ left); the target angle is ``steer * max_steer_rad``, approached at
                most ``max_steer_rate_radps * dt`` per call.
            throttle_brake: in [-1, 1]; > 0 is the fraction of the drive torque, < 0 the fraction of
                the brake torque. There is no reverse gear.
            dt: the control step (s).
        """
        p = self.params
        self.last_command = (steer, throttle_brake)
        if dt > 0.0:  # remembered for proprioception's acceleration over this control step
            self._cmd_dt = dt
            self._speed_at_cmd = self.state().speed_mps
        # -- steering: rate-limited virtual wheel, then Ackermann angles of the two knuckles
        if steer > 1.0:
            steer = 1.0
        elif steer < -1.0:
            steer = -1.0
        target = steer * p.max_steer_rad
        step = p.max_steer_rate_radps * dt
        d = target - self.steer_rad
        if d > step:
            d = step
        elif d < -step:
            d = -step
        delta = self.steer_rad + d
        self.steer_rad = delta
        if abs(delta) > 1e-6:
            t = math.tan(delta)
            L = 2.0 * self._half_l
            # turn radius of the rear-axle centre, signed (+ left); inner wheel turns more
            rad = L / t
            fl = math.atan(L / (rad - self._half_t))
            fr = math.atan(L / (rad + self._half_t))
        else:
            fl = fr = 0.0
        cid = self._cid
        body = self.body_id
        # PyBullet turns a motor's force limit into an impulse limit of force * fixedTimeStep and applies
        # it on every one of the numSubSteps substeps of stepSimulation: divide so that the forces are
        # true forces whichever way the world steps (12 x 1/240 s calls, or 1/20 s in 12 substeps).
        nsub = self._get_engine_params(physicsClientId=cid)["numSubSteps"]
        k = 1.0 / nsub if nsub > 1 else 1.0
        f_steer = p.steer_motor_torque_nm * k
        self._set_motors(
            body, _STEER_JOINTS, pybullet.POSITION_CONTROL,
            targetPositions=[fl, fr], forces=[f_steer, f_steer], positionGains=self._steer_gains,
            physicsClientId=cid,
        )
        # -- longitudinal: drive (rear), brakes and resistance
        if throttle_brake > 1.0:
            throttle_brake = 1.0
        elif throttle_brake < -1.0:
            throttle_brake = -1.0
        (vx, vy, _), _ = self._get_vel(body, physicsClientId=cid)
        v2 = vx * vx + vy * vy
        resist = self._roll_torque + self._aero_k * v2  # total, N m
        if throttle_brake > 0.0:
            drive = throttle_brake * p.max_drive_torque_nm
            v = math.sqrt(v2)
            if v > 1.0:
                cap = p.max_drive_power_w * self._r / v
                if drive > cap:
                    drive = cap
            brake = 0.0
        else:
            drive = 0.0
            brake = -throttle_brake * p.max_brake_torque_nm
        f_front = 0.5 * (brake * p.brake_front_share + resist * 0.5)
        f_rear_res = 0.5 * (brake * (1.0 - p.brake_front_share) + resist * 0.5)
        if drive > 0.0:
            f_rear = 0.5 * drive - f_rear_res
            if f_rear > 0.0:
                rear_target = self._drive_target
            else:
                rear_target, f_rear = 0.0, -f_rear
        else:
            rear_target, f_rear = 0.0, f_rear_res
        self._set_motors(
            body, _WHEEL_JOINTS, pybullet.VELOCITY_CONTROL,
            targetVelocities=[0.0, 0.0, rear_target, rear_target],
            forces=[f_front * k, f_front * k, f_rear * k, f_rear * k],
            physicsClientId=cid,
        )

    # -- state -----------------------------------------------------------------------------------
    def state(self) -> VehicleState:
        """The chassis state (two cheap PyBullet queries)."""
        c = self.client
        (x, y, z), (qx, qy, qz, qw) = c.getBasePositionAndOrientation(self.body_id)
        (vx, vy, _), (_, _, wz) = c.getBaseVelocity(self.body_id)
        yaw = math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
        cy, sy = math.cos(yaw), math.sin(yaw)
        return VehicleState(
            x=x, y=y, z=z, yaw=yaw,
            speed_mps=vx * cy + vy * sy,
            lateral_speed_mps=-vx * sy + vy * cy,
            yaw_rate_radps=wz,
            steer_rad=self.steer_rad,
        )

    def proprioception(self) -> np.ndarray:
        """The car's own sensing, in the order of :attr:`PROPRIO_FIELDS` (float32, SI units).
        Acceleration is the change of speed since the last :meth:`apply_control`, over its ``dt``."""
        st = self.state()
        accel = (st.speed_mps - self._speed_at_cmd) / self._cmd_dt if self._cmd_dt > 0.0 else 0.0
        steer_cmd, throttle_cmd = self.last_command
        return np.array(
            [st.speed_mps, st.yaw_rate_radps, st.steer_rad, accel, st.speed_mps * st.yaw_rate_radps, steer_cmd, throttle_cmd],
            dtype=np.float32,
        )

    def reset(self, x: float, y: float, yaw: float, speed_mps: float = 0.0) -> None:
        """Teleport the car onto z = 0 ground at (x, y, yaw) moving forward at ``speed_mps``;
        wheels spin to match, steering is centred."""
        c = self.client
        body = self.body_id
        c.resetBasePositionAndOrientation(body, [x, y, self.spawn_z], c.getQuaternionFromEuler([0.0, 0.0, yaw]))
        c.resetBaseVelocity(body, [speed_mps * math.cos(yaw), speed_mps * math.sin(yaw), 0.0], [0.0, 0.0, 0.0])
        spin = speed_mps / self.params.wheel_radius_m
        for j in _WHEEL_JOINTS:
            c.resetJointState(body, j, 0.0, spin)
        for j in _STEER_JOINTS:
            c.resetJointState(body, j, 0.0, 0.0)
        self.steer_rad = 0.0
        # coast: hold steering at 0, wheels free but for rolling resistance
        self.apply_control(0.0, 0.0, 0.0)
        self._cmd_dt = 0.0  # no acceleration known until the first real command

    def sync_from_sim(self) -> None:
        """Re-read the virtual steering angle from the knuckle joints, e.g. after ``restoreState``
        (which restores joints but not this object's Python-side ``steer_rad``)."""
        c = self.client
        fl = c.getJointState(self.body_id, _FL_STEER)[0]
        fr = c.getJointState(self.body_id, _FR_STEER)[0]
        if abs(fl) < 1e-6 or abs(fr) < 1e-6:
            self.steer_rad = 0.5 * (fl + fr)
        else:  # Ackermann: cot(centre) is the mean of the wheels' cotangents
            self.steer_rad = math.atan(2.0 / (1.0 / math.tan(fl) + 1.0 / math.tan(fr)))

    # -- geometry --------------------------------------------------------------------------------
    def corners_xy(self) -> np.ndarray:
        """The (4, 2) footprint corners in the world frame, counter-clockwise:
        front-left, rear-left, rear-right, front-right."""
        (x, y, _), (qx, qy, qz, qw) = self.client.getBasePositionAndOrientation(self.body_id)
        yaw = math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
        cy, sy = math.cos(yaw), math.sin(yaw)
        hl, hw = 0.5 * self.params.length_m, 0.5 * self.params.width_m
        local = ((hl, hw), (-hl, hw), (-hl, -hw), (hl, -hw))
        return np.array([(x + cy * lx - sy * ly, y + sy * lx + cy * ly) for lx, ly in local])
