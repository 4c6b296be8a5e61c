"""Tests of kai_drive.sim.route (reference-line geometry, random routes) and kai_drive.sim.road (the PyBullet
road bodies)."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pytest
from pybullet_utils.bullet_client import BulletClient

from kai_drive.sim.road import build_road
from kai_drive.sim.route import RoadLayout, Route, Segment, wrap_angle

BODY_NAMES = {"ground", "road", "markings", "barrier_left", "barrier_right"}


@pytest.fixture
def client():
    c = BulletClient(connection_mode=pybullet.DIRECT)
    yield c
    c.disconnect()


def _poses(route, rng, n, d_max=6.0):
    s = rng.uniform(0.0, route.length_m, n)
    d = rng.uniform(-d_max, d_max, n)
    return s, d


# ---------------------------------------------------------------------------------------------
# segments
# ---------------------------------------------------------------------------------------------
def test_segment_validation_and_defaults():
    assert Segment("arc", 10.0, 0.1).curvature_end == 0.1
    assert Segment.transition(20.0, 0.0, 0.05).heading_change == pytest.approx(0.5)
    with pytest.raises(ValueError):
        Segment("spiral", 10.0)
    with pytest.raises(ValueError):
        Segment("straight", 10.0, 0.1)
    with pytest.raises(ValueError):
        Segment("arc", 10.0, 0.1, 0.2)
    with pytest.raises(ValueError):
        Segment.straight(0.0)


# ---------------------------------------------------------------------------------------------
# straight line
# ---------------------------------------------------------------------------------------------
def test_straight_project_is_exact():
    h0 = 0.3
    x0, y0 = 5.0, -3.0
    route = Route([Segment.straight(100.0)], start_xy=(x0, y0), start_heading=h0)
    assert route.length_m == pytest.approx(100.0)
    assert route.s[0] == 0.0 and route.s[-1] == pytest.approx(100.0)
    c, sn = math.cos(h0), math.sin(h0)
    # includes points before the start and past the end (tangent extension)
    for s, d, yaw_err in [(0.0, 0.0, 0.0), (12.3, 1.7, 0.2), (55.55, -4.2, -1.0), (99.9, 0.3, 3.0),
                          (-7.0, 2.0, 0.1), (112.0, -1.5, -0.4)]:
        x = x0 + s * c - d * sn
        y = y0 + s * sn + d * c
        for hint in (None, s, s + 3.0, 0.0):
            ps, pd, pe = route.project(x, y, h0 + yaw_err, s_hint=hint)
            assert ps == pytest.approx(s, abs=1e-9)
            assert pd == pytest.approx(d, abs=1e-9)
            assert pe == pytest.approx(yaw_err, abs=1e-9)
        px, py, pyaw = route.pose_at(s, d)
        assert (px, py) == pytest.approx((x, y), abs=1e-9)
        assert pyaw == pytest.approx(h0)
    # heading error is wrapped to [-pi, pi)
    _, _, e = route.project(x0 + 1.0, y0, h0 + 2 * math.pi + 0.5)
    assert e == pytest.approx(0.5)
    _, _, e = route.project(x0 + 1.0, y0, h0 + math.pi + 0.5)
    assert e == pytest.approx(-math.pi + 0.5)
    assert route.curvature_at(50.0) == 0.0


def test_length_not_multiple_of_resolution():
    route = Route([Segment.straight(10.3)], resolution_m=0.5)
    assert route.s[-1] == pytest.approx(10.3)
    assert np.all(np.diff(route.s) > 0)
    assert route.xy[-1] == pytest.approx([10.3, 0.0])
    assert route.project(10.2, 0.5, 0.0) == pytest.approx((10.2, 0.5, 0.0))


# ---------------------------------------------------------------------------------------------
# circle
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("turn", [+1, -1])
def test_circle_project_is_exact(turn):
    R = 30.0
    # centre at the origin; start at (0, -turn*R) heading +x: a left turn (turn=+1) goes CCW
    route = Route([Segment.arc(1.5 * math.pi * R, turn / R)], start_xy=(0.0, -turn * R), start_heading=0.0)
    assert route.length_m == pytest.approx(1.5 * math.pi * R)
    assert np.allclose(np.hypot(route.xy[:, 0], route.xy[:, 1]), R, atol=1e-9)
    for ang in [0.01, 0.4, 1.0, 2.5, 4.6]:
        for d in [-6.0, -1.75, 0.0, 2.0, 5.5]:
            # left of travel is towards the centre for a left turn, away from it for a right turn
            rad = R - turn * d
            x, y = rad * math.sin(ang), -turn * rad * math.cos(ang)
            route_heading = turn * ang
            yaw = route_heading + 0.3
            expected_s = R * ang
            for hint in (None, expected_s, expected_s - 1.5):
                s, dd, e = route.project(x, y, yaw, s_hint=hint)
                assert s == pytest.approx(expected_s, abs=0.01)
                assert dd == pytest.approx(d, abs=0.01)
                assert e == pytest.approx(0.3, abs=1e-3)
                # analytic model: in fact exact to round-off
                assert abs(s - expected_s) < 1e-9 and abs(dd - d) < 1e-9
            px, py, pyaw = route.pose_at(expected_s, d)
            assert (px, py) == pytest.approx((x, y), abs=1e-9)
            assert wrap_angle(pyaw - route_heading) == pytest.approx(0.0, abs=1e-9)
    assert route.curvature_at(10.0) == pytest.approx(turn / R)


# ---------------------------------------------------------------------------------------------
# clothoid transition
# ---------------------------------------------------------------------------------------------
def test_transition_curvature_linear_and_heading_integral():
    L, k1 = 50.0, 1 / 40
    route = Route([Segment.straight(10.0), Segment.transition(L, 0.0, k1), Segment.arc(20.0, k1)], start_heading=0.2)
    s = route.s
    in_tr = (s >= 10.0) & (s <= 60.0)
    assert np.allclose(route.curvature[in_tr], (s[in_tr] - 10.0) / L * k1, atol=1e-12)
    assert np.all(route.curvature[s < 10.0] == 0.0)
    assert route.curvature_at(35.0) == pytest.approx(0.5 * k1)
    # heading change over the transition = integral of curvature = k1 * L / 2
    i0, i1 = np.searchsorted(s, 10.0), np.searchsorted(s, 60.0)
    assert route.heading[i1] - route.heading[i0] == pytest.approx(0.5 * k1 * L, abs=1e-12)
    assert route.heading[-1] - route.heading[0] == pytest.approx(0.5 * k1 * L + k1 * 20.0, abs=1e-12)
    # positions agree with a brute-force integration of the heading
    ss = np.linspace(0.0, route.length_m, 400_001)
    kk = np.interp(ss, [0, 10, 60, 80], [0, 0, k1, k1])
    hh = 0.2 + np.concatenate(([0.0], np.cumsum(0.5 * (kk[1:] + kk[:-1]) * np.diff(ss))))
    xx = np.concatenate(([0.0], np.cumsum(0.5 * (np.cos(hh[1:]) + np.cos(hh[:-1])) * np.diff(ss))))
    yy = np.concatenate(([0.0], np.cumsum(0.5 * (np.sin(hh[1:]) + np.sin(hh[:-1])) * np.diff(ss))))
    assert route.xy[-1] == pytest.approx([xx[-1], yy[-1]], abs=1e-6)
    # pose_at <-> project round trip across the transition
    for sv in np.linspace(8.0, 70.0, 37):
        for d in (-3.0, 0.0, 4.0):
            x, y, yaw = route.pose_at(sv, d)
            ps, pd, pe = route.project(x, y, yaw, s_hint=sv + 1.0)
            # the interval model is off by c * res^3 / 12 = 5e-6 m on this transition
            assert (ps, pd, pe) == pytest.approx((sv, d, 0.0), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# generated routes
# ---------------------------------------------------------------------------------------------
def _min_far_distance(route, adjacent_m):
    xy, s = route.xy[::2], route.s[::2]
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    far = np.abs(s[:, None] - s[None, :]) > adjacent_m
    return float(np.sqrt(d2[far].min())) if far.any() else float("inf")


def test_generate_same_seed_same_route():
    a = Route.generate(np.random.default_rng(7))
    b = Route.generate(np.random.default_rng(7))
    assert a.segments == b.segments
    for name in ("s", "xy", "heading", "curvature"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    c = Route.generate(np.random.default_rng(8))
    assert a.segments != c.segments
    assert not np.allclose(a.xy[-1], c.xy[-1])


@pytest.mark.parametrize("seed", range(40))
def test_generate_properties(seed):
    max_k = 1 / 40
    route = Route.generate(np.random.default_rng(seed), length_m=250.0, max_curvature=max_k, min_straight_m=20.0)
    assert route.length_m == pytest.approx(250.0, abs=1e-9)
    assert route.s[-1] == pytest.approx(250.0, abs=1e-9)
    segs = route.segments
    assert segs[0].kind == "straight" and segs[0].length_m >= 20.0
    # curvature continuous across segment joints, bounded everywhere
    for a, b in zip(segs[:-1], segs[1:]):
        assert a.curvature_end == pytest.approx(b.curvature_start, abs=1e-12)
        assert {a.kind, b.kind} & {"transition"}  # no jump straight<->arc
    assert segs[0].curvature_start == 0.0
    assert np.abs(route.curvature).max() <= max_k + 1e-12
    for sg in segs:
        assert max(abs(sg.curvature_start), abs(sg.curvature_end)) <= max_k + 1e-12
        if sg.kind == "straight":
            assert sg.length_m >= 20.0 or sg is segs[-1]
    # heading bounded, no self-intersection (nothing within 30 m of a non-adjacent part)
    assert np.abs(route.heading - route.heading[0]).max() <= 2 * math.pi / 3 + 1e-9
    assert _min_far_distance(route, adjacent_m=60.0) >= 28.0  # 30 m checked on a 2.5 m grid


def test_generate_long_and_tight():
    # the extremes a RoadSpec allows: long routes, tight curvature, no minimum straight
    route = Route.generate(np.random.default_rng(3), length_m=2000.0, max_curvature=0.2, min_straight_m=0.0)
    assert route.length_m == pytest.approx(2000.0)
    assert np.abs(route.curvature).max() <= 0.2 + 1e-12
    assert _min_far_distance(route, adjacent_m=60.0) >= 28.0


def test_project_round_trip_on_generated_route():
    rng = np.random.default_rng(0)
    route = Route.generate(np.random.default_rng(11))
    s, d = _poses(route, rng, 300)
    for sv, dv in zip(s, d):
        x, y, yaw = route.pose_at(sv, dv)
        for hint in (sv - 1.5, None):
            ps, pd, pe = route.project(x, y, yaw + 0.1, s_hint=hint)
            # exact up to the interval model's c * res^3 / 12 (< 3e-5 m on these transitions)
            assert abs(ps - sv) < 1e-4 and abs(pd - dv) < 1e-4 and abs(pe - 0.1) < 1e-6
    # a stale hint still finds the right place
    x, y, yaw = route.pose_at(200.0, 1.0)
    assert route.project(x, y, yaw, s_hint=20.0)[:2] == pytest.approx((200.0, 1.0), abs=1e-6)
    # vectorised pose_at agrees with the scalar one
    P = route.poses_at(s, d)
    for k in range(0, 300, 17):
        x, y, yaw = route.pose_at(s[k], d[k])
        assert P[k, :2] == pytest.approx((x, y), abs=1e-9)
        assert wrap_angle(P[k, 2] - yaw) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------
def test_layout_offsets():
    two = RoadLayout()
    assert two.half_width_m == pytest.approx(3.5)
    assert two.edge_offset_m == pytest.approx(4.0)
    assert two.lane_center_offset(0) == pytest.approx(-1.75)  # rightmost lane is on the right (d < 0)
    assert two.lane_center_offset(1) == pytest.approx(1.75)
    three = RoadLayout(n_lanes=3, lane_width_m=3.0, shoulder_m=1.0)
    assert [three.lane_center_offset(i) for i in range(3)] == pytest.approx([-3.0, 0.0, 3.0])
    assert three.edge_offset_m == pytest.approx(5.5)
    assert three.lane_at(-3.2) == 0 and three.lane_at(0.4) == 1 and three.lane_at(9.0) == 2
    assert RoadLayout(edge="curb").edge_height_m == pytest.approx(0.15)
    with pytest.raises(ValueError):
        RoadLayout(n_lanes=4)
    with pytest.raises(ValueError):
        RoadLayout(edge="wall")
    with pytest.raises(ValueError):
        two.lane_center_offset(2)


# ---------------------------------------------------------------------------------------------
# PyBullet bodies
# ---------------------------------------------------------------------------------------------
def _side_hit_distances(c, route, layout, bodies, s_values):
    """Distance from the centre line along the normal to the first hit on each side."""
    z = 0.5 * layout.edge_height_m
    reach = layout.edge_offset_m + 5.0
    out = []
    for s in s_values:
        x, y, _ = route.pose_at(s, 0.0)
        for side, name in ((+1, "barrier_left"), (-1, "barrier_right")):
            tx, ty, _ = route.pose_at(s, side * reach)
            hit = c.rayTest([x, y, z], [tx, ty, z])[0]
            assert hit[0] == bodies[name], (s, name, hit)
            out.append(hit[2] * reach)
    return np.array(out)


@pytest.mark.parametrize(
    "layout", [RoadLayout(), RoadLayout(n_lanes=1, shoulder_m=0.0), RoadLayout(n_lanes=3, edge="curb")]
)
def test_build_road_bodies_and_barrier_distance(client, layout):
    route = Route.generate(np.random.default_rng(5))
    bodies = build_road(client, route, layout)
    assert set(bodies) == BODY_NAMES
    assert len(set(bodies.values())) == 5
    assert client.getNumBodies() == 5
    s_values = np.linspace(0.7, route.length_m - 0.7, 61)  # straights and curves alike
    dist = _side_hit_distances(client, route, layout, bodies, s_values)
    assert np.abs(dist - layout.edge_offset_m).max() < 0.02
    # nothing but the ground under the road: road and markings are visual-only
    for s in (10.0, 100.0):
        x, y, _ = route.pose_at(s, layout.lane_center_offset(0))
        hit = client.rayTest([x, y, 5.0], [x, y, -5.0])[0]
        assert hit[0] == bodies["ground"] and hit[3][2] == pytest.approx(0.0, abs=1e-6)
    for name in ("road", "markings"):
        assert client.getCollisionShapeData(bodies[name], -1) == ()
        assert len(client.getVisualShapeData(bodies[name])) == 1
    # the top of the edge body is where the layout says
    x, y, _ = route.pose_at(50.0, layout.edge_offset_m + 0.5 * layout.barrier_thickness_m)
    hit = client.rayTest([x, y, 3.0], [x, y, -1.0])[0]
    assert hit[0] == bodies["barrier_left"] and hit[3][2] == pytest.approx(layout.edge_height_m, abs=1e-3)


def test_barrier_stops_fast_car(client):
    route = Route([Segment.straight(100.0)])
    layout = RoadLayout()
    bodies = build_road(client, route, layout)
    client.setGravity(0, 0, -9.81)
    box = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[2.2, 0.9, 0.6])
    for s0, v in ((30.0, 30.0), (61.0, -30.0)):  # straight into each barrier, 30 m/s
        car = client.createMultiBody(1500.0, box, -1, [s0, 0.0, 0.7])
        client.resetBaseVelocity(car, [0.0, v, 0.0])
        for _ in range(240):
            client.stepSimulation()
        (_, y, _), _ = client.getBasePositionAndOrientation(car)
        assert abs(y) < layout.edge_offset_m, y
        client.removeBody(car)
    assert set(bodies) == BODY_NAMES


def test_build_is_deterministic_and_worlds_independent():
    route_a = Route.generate(np.random.default_rng(1))
    route_b = Route.generate(np.random.default_rng(2))
    lay_a, lay_b = RoadLayout(n_lanes=2), RoadLayout(n_lanes=3, shoulder_m=1.0)
    ca, cb, cc = (BulletClient(connection_mode=pybullet.DIRECT) for _ in range(3))
    try:
        ba = build_road(ca, route_a, lay_a)
        bb = build_road(cb, route_b, lay_b)
        bc = build_road(cc, route_a, lay_a)  # same inputs as world a
        # determinism: same bodies, shapes and placements
        assert ba == bc
        for name, uid in ba.items():
            assert ca.getVisualShapeData(uid) == cc.getVisualShapeData(uid)
            assert ca.getNumJoints(uid) == cc.getNumJoints(uid)
            for link in range(-1, ca.getNumJoints(uid)):
                assert ca.getCollisionShapeData(uid, link) == cc.getCollisionShapeData(uid, link)
                assert ca.getAABB(uid, link) == cc.getAABB(uid, link)
        # independence: each world sees its own road
        s_a = np.linspace(1.0, route_a.length_m - 1.0, 15)
        s_b = np.linspace(1.0, route_b.length_m - 1.0, 15)
        da = _side_hit_distances(ca, route_a, lay_a, ba, s_a)
        db = _side_hit_distances(cb, route_b, lay_b, bb, s_b)
        assert np.abs(da - lay_a.edge_offset_m).max() < 0.02
        assert np.abs(db - lay_b.edge_offset_m).max() < 0.02
        cb.resetSimulation()
        assert ca.getNumBodies() == 5
        da2 = _side_hit_distances(ca, route_a, lay_a, ba, s_a)
        assert np.array_equal(da, da2)
    finally:
        for c in (ca, cb, cc):
            c.disconnect()


def test_camera_sees_the_road(client):
    route = Route.generate(np.random.default_rng(4))
    layout = RoadLayout()
    colors = {"road": (0.2, 0.2, 0.9, 1.0), "ground": (0.1, 0.8, 0.1, 1.0)}
    build_road(client, route, layout, colors=colors)
    x, y, h = route.pose_at(30.0, layout.lane_center_offset(0))
    view = client.computeViewMatrix([x, y, 1.5], [x + 10 * math.cos(h), y + 10 * math.sin(h), 1.0], [0, 0, 1])
    proj = client.computeProjectionMatrixFOV(70, 1.0, 0.1, 200.0)
    _, _, rgb, _, _ = client.getCameraImage(
        64, 64, view, proj, renderer=pybullet.ER_TINY_RENDERER, flags=pybullet.ER_NO_SEGMENTATION_MASK
    )
    img = np.asarray(rgb, dtype=np.uint8).reshape(64, 64, 4)
    r, g, b = img[60, 32, :3].astype(int)  # just ahead of the car: road (blue), lit from above
    assert b > 2 * r and b > 2 * g, img[60, 32]
    with pytest.raises(ValueError):
        build_road(client, route, layout, colors={"sky": (1, 1, 1, 1)})
