"""Behaviour of the ego car (kai_drive.sim.vehicle) on flat ground in its own DIRECT client."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pytest
from pybullet_utils.bullet_client import BulletClient

from kai_drive.sim.vehicle import Vehicle, VehicleState

DT = 0.05
SUBSTEPS = 12


@pytest.fixture
def make_client():
    clients = []

    def make() -> BulletClient:
        c = BulletClient(connection_mode=pybullet.DIRECT)
        c.setGravity(0, 0, -9.81)
        c.setTimeStep(1.0 / 240.0)
        col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[2000.0, 2000.0, 1.0])
        ground = c.createMultiBody(0, col, -1, [0.0, 0.0, -1.0])  # top face at z = 0
        c.changeDynamics(ground, -1, lateralFriction=1.0)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.disconnect()


def control_step(c: BulletClient, car: Vehicle, steer: float, throttle_brake: float) -> VehicleState:
    car.apply_control(steer, throttle_brake, DT)
    for _ in range(SUBSTEPS):
        c.stepSimulation()
    return car.state()


def roll_pitch(c: BulletClient, car: Vehicle) -> tuple[float, float]:
    r, p, _ = c.getEulerFromQuaternion(c.getBasePositionAndOrientation(car.body_id)[1])
    return r, p


def fit_circle_radius(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    a = np.c_[2 * x, 2 * y, np.ones_like(x)]
    cx, cy, k = np.linalg.lstsq(a, x * x + y * y, rcond=None)[0]
    return math.sqrt(k + cx * cx + cy * cy)


def test_mass_size_and_single_body(make_client):
    c = make_client()
    car = Vehicle(c)
    assert c.getNumBodies() == 2  # ground + the car: one multibody
    total = sum(c.getDynamicsInfo(car.body_id, j)[0] for j in range(-1, c.getNumJoints(car.body_id)))
    assert total == pytest.approx(1500.0, rel=0.01)
    lo, hi = np.array(c.getAABB(car.body_id, -1)[0]), np.array(c.getAABB(car.body_id, -1)[1])
    assert hi[0] - lo[0] == pytest.approx(4.5, abs=0.1)
    assert hi[1] - lo[1] == pytest.approx(1.8, abs=0.1)
    assert hi[2] == pytest.approx(1.45, abs=0.1)
    # the whole body (wheels included) stays inside the footprint
    lo_all = np.min([c.getAABB(car.body_id, j)[0] for j in range(-1, 6)], axis=0)
    hi_all = np.max([c.getAABB(car.body_id, j)[1] for j in range(-1, 6)], axis=0)
    assert hi_all[1] - lo_all[1] <= 1.8 + 0.1
    assert lo_all[2] == pytest.approx(0.0, abs=0.02)  # wheels touch the ground


def test_rests_on_ground_and_footprint(make_client):
    c = make_client()
    car = Vehicle(c, x=3.0, y=-2.0, yaw=math.pi / 2)
    for _ in range(40):
        s = control_step(c, car, 0.0, 0.0)
    assert s.x == pytest.approx(3.0, abs=0.01) and s.y == pytest.approx(-2.0, abs=0.01)
    assert s.yaw == pytest.approx(math.pi / 2, abs=1e-3)
    assert s.z == pytest.approx(car.spawn_z, abs=0.02)
    assert abs(s.speed_mps) < 0.01 and abs(s.steer_rad) == 0.0
    corners = car.corners_xy()
    assert corners.shape == (4, 2)
    # yaw = 90 deg: front-left corner is ahead (+y) and to the left (-x)
    np.testing.assert_allclose(corners[0], [3.0 - 0.9, -2.0 + 2.25], atol=0.02)
    np.testing.assert_allclose(corners[2], [3.0 + 0.9, -2.0 - 2.25], atol=0.02)
    area = 0.5 * sum(
        corners[i, 0] * corners[(i + 1) % 4, 1] - corners[(i + 1) % 4, 0] * corners[i, 1] for i in range(4)
    )
    assert area == pytest.approx(4.5 * 1.8, rel=1e-6)  # counter-clockwise


def test_full_throttle_acceleration_is_plausible_and_stable(make_client):
    c = make_client()
    car = Vehicle(c)
    t, t100 = 0.0, None
    max_tilt, zs = 0.0, []
    while t < 25.0:
        s = control_step(c, car, 0.0, 1.0)
        t += DT
        r, p = roll_pitch(c, car)
        max_tilt = max(max_tilt, abs(r), abs(p))
        zs.append(s.z)
        if t100 is None and s.speed_mps >= 100 / 3.6:
            t100 = t
        if s.speed_mps >= 30.0:
            break
    assert t100 is not None and 6.0 <= t100 <= 15.0, t100
    assert s.speed_mps >= 30.0
    assert max_tilt < 0.02
    assert max(zs) - min(zs) < 0.02
    assert abs(s.y) < 0.5 and abs(s.yaw) < 0.01  # straight line
    # the speed cap holds
    for _ in range(200):
        s = control_step(c, car, 0.0, 1.0)
    assert s.speed_mps <= car.params.max_speed_mps + 0.5


def test_full_brake_from_20_mps(make_client):
    c = make_client()
    car = Vehicle(c, speed_mps=20.0)
    x0 = car.state().x
    for _ in range(200):
        s = control_step(c, car, 0.0, -1.0)
        if s.speed_mps < 0.01:
            break
    assert abs(s.speed_mps) < 0.05
    assert 20.0 <= s.x - x0 <= 45.0, s.x - x0
    assert abs(s.y) < 0.3 and abs(s.yaw) < 0.02
    # stays put while braked
    for _ in range(20):
        s2 = control_step(c, car, 0.0, -1.0)
    assert abs(s2.x - s.x) < 0.01


def test_coasting_decelerates_gently(make_client):
    c = make_client()
    car = Vehicle(c, speed_mps=20.0)
    for _ in range(40):  # 2 s
        s = control_step(c, car, 0.0, 0.0)
    decel = (20.0 - s.speed_mps) / 2.0
    assert 0.1 < decel < 1.0, decel


@pytest.mark.parametrize("delta", [0.2, 0.45])
def test_low_speed_turn_radius_matches_geometry(make_client, delta):
    c = make_client()
    car = Vehicle(c, speed_mps=3.0)
    target = 3.0
    pts = []
    for k in range(320):
        s = car.state()
        control_step(c, car, delta / car.params.max_steer_rad, 0.5 * (target - s.speed_mps))
        if k >= 60:  # steering settled, speed steady
            s = car.state()
            back = car.cg_to_rear_axle_m
            pts.append((s.x - back * math.cos(s.yaw), s.y - back * math.sin(s.yaw)))
    assert car.state().speed_mps == pytest.approx(target, abs=0.5)
    radius = fit_circle_radius(np.array(pts))
    expected = car.params.wheelbase_m / math.tan(delta)
    assert radius == pytest.approx(expected, rel=0.10), (radius, expected)


def test_steering_angle_and_rate_limits(make_client):
    c = make_client()
    car = Vehicle(c, speed_mps=5.0)
    p = car.params
    prev = 0.0
    seen = []
    for cmd in [1.0] * 20 + [-1.0] * 30 + [3.0] * 5:
        s = control_step(c, car, cmd, 0.0)
        assert abs(s.steer_rad - prev) <= p.max_steer_rate_radps * DT + 1e-9
        assert abs(s.steer_rad) <= p.max_steer_rad + 1e-9
        seen.append(s.steer_rad)
        prev = s.steer_rad
    assert max(seen) == pytest.approx(p.max_steer_rad)
    assert min(seen) == pytest.approx(-p.max_steer_rad)
    # held at the left limit: the knuckles sit at the Ackermann angles of the virtual wheel
    for _ in range(30):
        s = control_step(c, car, 1.0, 0.0)
    fl = c.getJointState(car.body_id, 0)[0]
    fr = c.getJointState(car.body_id, 2)[0]
    rad = p.wheelbase_m / math.tan(p.max_steer_rad)
    assert fl == pytest.approx(math.atan(p.wheelbase_m / (rad - p.track_m / 2)), abs=0.02)
    assert fr == pytest.approx(math.atan(p.wheelbase_m / (rad + p.track_m / 2)), abs=0.02)
    assert fl > p.max_steer_rad > fr > 0  # inner wheel turns more


@pytest.mark.parametrize("incidence_deg", [0.0, 30.0, 60.0])
def test_no_tunnelling_through_barrier(make_client, incidence_deg):
    """Drive at 30 m/s into a 0.4 m thick, 0.8 m tall wall; incidence is measured from the wall's normal."""
    c = make_client()
    a = math.radians(incidence_deg)
    nx, ny = math.cos(a), math.sin(a)  # wall normal (pointing away from the car)
    wall_x = 20.0
    col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[0.2, 200.0, 0.4])
    c.createMultiBody(0, col, -1, [wall_x + 0.2 * nx, 0.2 * ny, 0.4], c.getQuaternionFromEuler([0, 0, a]))
    car = Vehicle(c, speed_mps=30.0)
    for _ in range(80):
        control_step(c, car, 0.0, 1.0)
        corners = car.corners_xy()
        depth = (corners[:, 0] - wall_x) * nx + corners[:, 1] * ny  # > 0: past the near face
        assert depth.max() < 0.2, depth  # never through the wall
    s = car.state()
    assert s.z < 1.5


def test_two_clients_are_deterministic(make_client):
    c1, c2 = make_client(), make_client()
    car1 = Vehicle(c1, x=1.0, y=2.0, yaw=0.3, speed_mps=5.0)
    car2 = Vehicle(c2, x=1.0, y=2.0, yaw=0.3, speed_mps=5.0)
    rng = np.random.default_rng(0)
    for _ in range(150):
        steer, tb = rng.uniform(-1, 1), rng.uniform(-0.5, 1)
        s1 = control_step(c1, car1, steer, tb)
        s2 = control_step(c2, car2, steer, tb)
        assert s1 == s2  # bit-for-bit
    assert s1.speed_mps > 1.0  # it actually drove


def test_reset_teleports_with_speed(make_client):
    c = make_client()
    car = Vehicle(c)
    for _ in range(20):
        control_step(c, car, 1.0, 1.0)
    car.reset(10.0, 5.0, -1.0, speed_mps=12.0)
    s = car.state()
    assert (s.x, s.y) == pytest.approx((10.0, 5.0))
    assert s.yaw == pytest.approx(-1.0) and s.speed_mps == pytest.approx(12.0) and s.steer_rad == 0.0
    for _ in range(10):
        s = control_step(c, car, 0.0, 0.0)
    assert s.speed_mps == pytest.approx(12.0, abs=0.3)  # wheels spun up: no skid on landing
    assert s.yaw == pytest.approx(-1.0, abs=0.01)


def test_same_behaviour_when_the_world_steps_in_substeps(make_client):
    """World.step makes one stepSimulation call of 1/20 s in 12 substeps; PyBullet then scales motor
    force limits differently, which the vehicle must undo: accelerating and braking match plain stepping."""
    plain = make_client()
    sub = make_client()
    sub.setPhysicsEngineParameter(fixedTimeStep=DT, numSubSteps=SUBSTEPS)
    car_plain, car_sub = Vehicle(plain), Vehicle(sub)
    for k in range(200):
        tb = 1.0 if k < 150 else -1.0
        s_plain = control_step(plain, car_plain, 0.0, tb)
        car_sub.apply_control(0.0, tb, DT)
        sub.stepSimulation()
        s_sub = car_sub.state()
        assert s_sub.speed_mps == pytest.approx(s_plain.speed_mps, abs=0.1 + 0.01 * abs(s_plain.speed_mps))
    assert s_sub.x == pytest.approx(s_plain.x, rel=0.01)


def test_sync_from_sim_recovers_steering_after_restore(make_client):
    c = make_client()
    car = Vehicle(c, speed_mps=5.0)
    for _ in range(8):
        control_step(c, car, 1.0, 0.0)
    for _ in range(20):
        control_step(c, car, 0.5, 0.0)  # settle at 0.3 rad
    saved_steer = car.steer_rad
    sid = c.saveState()
    for _ in range(10):
        control_step(c, car, -1.0, 0.0)
    c.restoreState(stateId=sid)
    car.sync_from_sim()
    assert car.steer_rad == pytest.approx(saved_steer, abs=0.01)
