"""The World: own client per env, fixed steps, bodies by name, save/restore."""

import numpy as np
import pybullet
import pytest

from kai_drive.sim.vehicle import Vehicle
from kai_drive.sim.world import World


def _flat(w):
    c = w.client
    g = c.createMultiBody(0, c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[200, 200, 0.5]), basePosition=[0, 0, -0.5])
    c.changeDynamics(g, -1, lateralFriction=1.0)
    return w.add_body("ground", g)


def test_control_step_is_substeps_of_physics():
    w = World(physics_hz=240, control_hz=20)
    assert w.substeps == 12 and w.dt == pytest.approx(0.05)
    _flat(w)
    ball = w.client.createMultiBody(1.0, w.client.createCollisionShape(pybullet.GEOM_SPHERE, radius=0.1), basePosition=[0, 0, 50])
    w.client.changeDynamics(ball, -1, linearDamping=0.0)
    for _ in range(20):  # 1 s of free fall
        w.step()
    z = w.client.getBasePositionAndOrientation(ball)[0][2]
    # semi-implicit Euler with 240 steps of 1/240 s (20 steps of 0.05 s would fall 5.15 m)
    h, n = 1 / 240, 240
    assert z == pytest.approx(50 - 9.81 * h * h * n * (n + 1) / 2, abs=1e-3)
    w.close()


def test_bodies_by_name_and_errors():
    w = World()
    gid = _flat(w)
    assert w.body("ground") == gid and w.name_of(gid) == "ground"
    with pytest.raises(KeyError, match="already exists"):
        w.add_body("ground", gid)
    with pytest.raises(KeyError, match="no body named 'car'"):
        w.body("car")
    with pytest.raises(ValueError, match="multiple"):
        World(physics_hz=250, control_hz=20)
    w.reset()
    assert w.bodies == {}
    w.close()
    w.close()  # idempotent


def test_worlds_are_independent_and_save_restore_is_exact():
    a, b = World(), World()
    for w in (a, b):
        _flat(w)
    ca, cb = Vehicle(a.client, x=0, y=0, yaw=0, speed_mps=5.0), Vehicle(b.client, x=0, y=0, yaw=0, speed_mps=5.0)
    for _ in range(10):
        ca.apply_control(0.3, 0.5, a.dt)
        a.step()
    # b never stepped: its car is where it started
    assert cb.state().x == pytest.approx(0.0, abs=1e-3)
    snap = a.save_state()
    steer = ca.steer_rad
    trace1 = []
    for _ in range(15):
        ca.apply_control(-0.2, 0.8, a.dt)
        a.step()
        trace1.append(ca.state().x)
    a.restore_state(snap)
    ca.sync_from_sim()  # the joints tell the steering angle back to within the position controller's error
    assert ca.steer_rad == pytest.approx(steer, abs=1e-4)
    ca.steer_rad = steer  # the exact Python-side value makes the replay bit-exact
    trace2 = []
    for _ in range(15):
        ca.apply_control(-0.2, 0.8, a.dt)
        a.step()
        trace2.append(ca.state().x)
    assert np.array_equal(trace1, trace2)
    a.close(), b.close()


def test_unknown_renderer_is_an_error():
    with pytest.raises(ValueError, match="renderer"):
        World(renderer="vulkan")


def test_banner_filter_keeps_other_output_and_errors(capfd):
    """kai_drive.sim.bullet drops PyBullet's two banner lines only: other C-level output comes back and
    exceptions propagate."""
    import os

    from kai_drive.sim.bullet import without_banner

    with pytest.raises(ValueError, match="boom"):
        with without_banner((1, 2)):
            os.write(1, b"pybullet build time: Jan 1 2025\nkept on stdout\n")
            os.write(2, b"argv[0]=\nkept on stderr\n")
            raise ValueError("boom")
    out, err = capfd.readouterr()
    assert out == "kept on stdout\n" and err == "kept on stderr\n"
