"""On-board sensors. A sensor reads the world through the env's PyBullet client and the ego pose; it
never knows the task. Each sensor declares the observation entries (name -> gymnasium space) it fills,
and registers itself under its ``sensors.<key>`` spec section (:mod:`kai_drive.sensors.base`); importing
this package registers the built-in sensors."""

from kai_drive.sensors.base import SENSORS, Mount, Sensor, build_sensors, ego_mount, missing_value, noise_defaults, register_sensor
from kai_drive.sensors.camera import SEG_CLASSES, Camera
from kai_drive.sensors.lidar import Lidar
from kai_drive.sensors.proprio import Proprioception

__all__ = [
    "SENSORS", "Mount", "Sensor", "build_sensors", "ego_mount", "missing_value", "noise_defaults", "register_sensor",
    "Camera", "Lidar", "Proprioception", "SEG_CLASSES",
]
