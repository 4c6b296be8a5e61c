"""Sensors read the world right: a wall at a known distance, in lidar and in depth; segmentation labels."""

import math

import numpy as np
import pybullet
import pytest

from kai_drive.sensors import SEG_CLASSES, Camera, Lidar, Proprioception, ego_mount
from kai_drive.sensors import corruption
from kai_drive.sim.vehicle import Vehicle
from kai_drive.sim.world import World
from kai_drive.specs import CameraSpec, LidarSpec, StateSpec


def _world_with_wall(wall_x: float, yaw: float = 0.0):
    w = World(physics_hz=240, control_hz=20, renderer="tiny")
    c = w.client
    ground = c.createMultiBody(0, c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[100, 100, 0.5]),
                               c.createVisualShape(pybullet.GEOM_BOX, halfExtents=[100, 100, 0.5], rgbaColor=[0.3, 0.5, 0.3, 1]),
                               basePosition=[0, 0, -0.5])
    c.changeDynamics(ground, -1, lateralFriction=1.0)
    w.add_body("ground", ground)
    half = [0.2, 10.0, 2.0]
    wall = c.createMultiBody(0, c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half),
                             c.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=[0.8, 0.2, 0.2, 1]),
                             basePosition=[wall_x, 0, 2.0])
    w.add_body("wall", wall, kind="barrier")
    car = Vehicle(c, x=0.0, y=0.0, yaw=yaw)
    w.add_body("ego", car.body_id, kind="ego")
    w.set_ego(car.body_id)
    return w, car, wall_x - half[0]


@pytest.mark.parametrize("distance", [6.0, 15.0])
def test_lidar_reads_a_wall_at_known_distance(distance):
    w, car, face = _world_with_wall(distance)
    lidar = Lidar(LidarSpec(beams=36, range_m=40.0, height_m=0.5))
    out = {}
    lidar.read(w, car, ego_mount(w.client, car.body_id, car.spawn_z), np.random.default_rng(0), out)
    ranges = out["lidar"]
    fwd = int(np.argmin(np.abs(lidar.angles)))
    assert lidar.angles[fwd] == pytest.approx(0.0)
    assert ranges[fwd] * 40.0 == pytest.approx(face, abs=0.03)  # the car itself is invisible to its lidar
    # a beam 30 degrees off axis travels face / cos(30) to the plane of the wall
    i30 = int(np.argmin(np.abs(lidar.angles - math.radians(30))))
    assert ranges[i30] * 40.0 == pytest.approx(face / math.cos(lidar.angles[i30]), abs=0.05)
    back = int(np.argmin(np.abs(np.abs(lidar.angles) - math.pi)))
    assert ranges[back] == 1.0  # nothing behind
    w.close()


def test_lidar_follows_the_car_yaw():
    w, car, face = _world_with_wall(10.0, yaw=math.pi / 2)  # car faces +y, wall is on its right
    lidar = Lidar(LidarSpec(beams=4, range_m=40.0))
    out = {}
    lidar.read(w, car, ego_mount(w.client, car.body_id, car.spawn_z), np.random.default_rng(0), out)
    right = int(np.argmin(np.abs(lidar.angles + math.pi / 2)))
    assert out["lidar"][right] * 40.0 == pytest.approx(face, abs=0.03)
    w.close()


def test_depth_and_segmentation_of_a_wall():
    w, car, face = _world_with_wall(12.0)
    spec = CameraSpec(width=32, height=32, fov_deg=60, position_m=(2.3, 0.0, 1.2), pitch_deg=0.0,
                      depth=True, segmentation=True)
    cam = Camera(spec)
    cam.reset(w, car)
    out = {}
    cam.read(w, car, ego_mount(w.client, car.body_id, car.spawn_z), np.random.default_rng(0), out)
    depth, seg, rgb = out["depth"], out["segmentation"], out["camera"]
    assert depth.dtype == np.float32 and seg.dtype == np.uint8 and rgb.dtype == np.uint8
    centre = depth[15:17, 15:17].mean()
    assert centre == pytest.approx(face - 2.3, abs=0.05)
    assert seg[16, 16] == SEG_CLASSES["barrier"]
    assert seg[31, 16] == SEG_CLASSES["ground"]  # 30 deg down: the ground 2 m ahead
    assert seg[0, 16] == SEG_CLASSES["none"]  # 30 deg up: over the 4 m wall, the sky
    assert rgb[16, 16, 0] > 150 and rgb[16, 16, 1] < 100  # the red wall
    w.close()


def test_proprioception_units():
    w, car, _ = _world_with_wall(200.0)
    car.reset(0.0, 0.0, 0.0, speed_mps=10.0)
    sensor = Proprioception(StateSpec(), Vehicle.PROPRIO_FIELDS)
    sensor.reset(w, car)
    car.apply_control(0.0, -1.0, w.dt)  # full brake
    w.step()
    out = {}
    sensor.read(w, car, ego_mount(w.client, car.body_id, car.spawn_z), np.random.default_rng(0), out)
    speed, yaw_rate, steer, accel, lat, prev_steer, prev_throttle = out["state"]
    assert 9.0 < speed < 10.0
    assert -10.0 < accel < -4.0  # braking, m/s^2
    assert prev_throttle == -1.0 and prev_steer == 0.0
    w.close()


def test_corruption_models_are_seeded_and_bounded():
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    img = np.full((8, 8, 3), 128, np.uint8)
    a, b = corruption.image_noise(img, 10.0, rng()), corruption.image_noise(img, 10.0, rng())
    assert a.tobytes() == b.tobytes() and a.dtype == np.uint8 and a.std() > 3
    assert corruption.frame_dropout(img, 1.0, rng()).max() == 0
    r = np.full(1000, 0.5, np.float32)
    d = corruption.beam_dropout(r, 0.2, rng())
    assert 0.15 < (d == 1.0).mean() < 0.25
    n = corruption.range_noise(r, 0.7, rng())
    assert n.min() >= 0.0 and n.max() <= 1.0
    assert corruption.image_noise(img, 0.0, rng()) is img  # off by default: untouched


def test_every_sensor_section_has_a_registered_sensor():
    """The env builds sensors from the registry, in the order of the ``sensors:`` fields (= observation
    order); each sensor declares its noise factors and what a lost reading is."""
    from kai_drive.sensors import SENSORS, missing_value
    from kai_drive.specs import SensorsSpec

    assert list(SENSORS) == list(SensorsSpec.model_fields) == ["camera", "lidar", "state"]
    assert (SENSORS["camera"], SENSORS["lidar"], SENSORS["state"]) == (Camera, Lidar, Proprioception)
    assert missing_value("camera") == 0.0 and missing_value("lidar") == 1.0 and missing_value("state") == 0.0
    with pytest.raises(KeyError):
        missing_value("sonar")
