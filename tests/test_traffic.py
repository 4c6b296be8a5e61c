"""Traffic models: IDM, MOBIL lane changes, the lead's brake, walkers; kinematic bodies follow the models."""

import math

import numpy as np
import pytest
from pybullet_utils.bullet_client import BulletClient

from kai_drive.sim.route import RoadLayout, Route, Segment
from kai_drive.sim.traffic import Actor, IDMParams, Traffic, create_box_body, idm_accel


@pytest.fixture
def world():
    import pybullet

    c = BulletClient(connection_mode=pybullet.DIRECT)
    yield c
    c.disconnect()


def _traffic(client, n_lanes=3):
    route = Route([Segment.straight(1000.0)])
    return Traffic(client, route, RoadLayout(n_lanes=n_lanes))


def _car(tr, name, lane, s, v, v0, model="idm", params=None):
    body = create_box_body(tr.client, (4.5, 1.8, 1.5), (1, 0, 0, 1), cabin=True)
    return tr.add_car(name, lane, s, v, v0, (1, 0, 0, 1), body, model=model, params=params)


def test_idm_free_road_and_interaction():
    p = IDMParams()
    assert idm_accel(0.0, 10.0, math.inf, 0.0, p) == pytest.approx(p.max_accel_mps2)
    assert idm_accel(10.0, 10.0, math.inf, 0.0, p) == pytest.approx(0.0)
    assert idm_accel(10.0, 10.0, 5.0, 5.0, p) < -p.comfort_decel_mps2  # closing fast on a short gap
    assert idm_accel(10.0, 10.0, 1e-3, 10.0, p) == -p.max_decel_mps2  # bounded


def test_idm_car_stops_behind_a_stopped_car_without_touching(world):
    tr = _traffic(world, n_lanes=1)
    stopped = _car(tr, "stopped", 0, 100.0, 0.0, 0.1, model="static")
    follower = _car(tr, "f", 0, 20.0, 15.0, 15.0)
    for _ in range(600):
        tr.step(0.05, ego_s=-500.0, ego_d=0.0, ego_v=0.0)
    gap = stopped.s - follower.s - 4.5
    assert follower.v < 0.05
    assert 1.0 < gap < 5.0


def test_mobil_overtakes_a_slow_car_when_the_next_lane_is_free(world):
    tr = _traffic(world)
    slow = _car(tr, "slow", 0, 60.0, 6.0, 6.0)
    fast = _car(tr, "fast", 0, 30.0, 14.0, 14.0)
    changed = False
    for _ in range(200):
        tr.step(0.05, ego_s=-500.0, ego_d=0.0, ego_v=0.0)
        changed |= fast.lc_to_lane == 1 or fast.lane == 1
    assert changed and fast.lane == 1
    assert fast.d == pytest.approx(RoadLayout(n_lanes=3).lane_center_offset(1))
    assert slow.lane == 0


def test_mobil_does_not_cut_in_front_of_a_close_ego(world):
    tr = _traffic(world, n_lanes=2)
    _car(tr, "slow", 0, 60.0, 5.0, 5.0)
    fast = _car(tr, "fast", 0, 40.0, 14.0, 14.0)
    lane1 = RoadLayout(n_lanes=2).lane_center_offset(1)
    for _ in range(20):  # the ego drives alongside, just behind, at the same speed
        tr.step(0.05, ego_s=fast.s - 3.0, ego_d=lane1, ego_v=fast.v)
        assert fast.lc_to_lane != 1 and fast.lane == 0


def test_lead_brakes_on_schedule(world):
    tr = _traffic(world, n_lanes=1)
    q = {"speed_mps": 10.0, "speed_amplitude_mps": 0.0, "speed_period_s": 10.0, "speed_phase_rad": 0.0,
         "brake_at_s": 1.0, "brake_decel_mps2": 6.0, "brake_duration_s": 1.0, "max_accel_mps2": 2.0}
    lead = _car(tr, "lead", 0, 50.0, 10.0, 10.0, model="lead", params=q)
    speeds = []
    for _ in range(60):
        tr.step(0.05, ego_s=0.0, ego_d=0.0, ego_v=0.0)
        speeds.append(lead.v)
    assert speeds[18] == pytest.approx(10.0)  # t = 0.95 s: cruising
    assert speeds[39] == pytest.approx(10.0 - 6.0 * 1.0, abs=0.05)  # t = 2.0 s: after 1 s of braking
    assert speeds[-1] > speeds[39]  # resumes


def test_walker_waits_for_the_trigger_then_crosses(world):
    tr = _traffic(world, n_lanes=2)
    body = create_box_body(world, (0.5, 0.6, 1.75), (1, 1, 0, 1))
    w = tr.add(Actor("pedestrian", "p", body, 0.5, 0.6, 1.75, 100.0, 5.0, model="walker",
                     params={"speed_mps": 1.5, "trigger_distance_m": 30.0, "start_time_s": None, "goal_d": -5.0}))
    for _ in range(10):
        tr.step(0.05, ego_s=0.0, ego_d=0.0, ego_v=10.0)
    assert w.d == 5.0 and not w.active
    tr.step(0.05, ego_s=70.0, ego_d=0.0, ego_v=10.0)
    assert w.active and w.d < 5.0 and w.vd == pytest.approx(-1.5)
    for _ in range(200):
        tr.step(0.05, ego_s=70.0, ego_d=0.0, ego_v=10.0)
    assert w.d == -5.0 and w.vd == 0.0
    (x, y, _), _ = world.getBasePositionAndOrientation(body)  # the body follows the model
    assert (x, y) == pytest.approx((100.0, -5.0))


def test_highway_npcs_never_overlap(make_env):
    env = make_env("KaiDrive/Highway-v0", config={"sensors": {"camera": {"enabled": False}}})
    env.reset(seed=3)
    tr = env.unwrapped.task.traffic
    for _ in range(300):
        _, _, term, trunc, _ = env.step(np.array([0.0, 0.2], np.float32))
        cars = [a for a in tr.actors if a.kind == "vehicle"]
        for i, a in enumerate(cars):
            for b in cars[i + 1:]:
                if abs(a.d - b.d) < 1.8:
                    assert abs(a.s - b.s) > 4.5, (a.name, b.name)
        if term or trunc:
            break
