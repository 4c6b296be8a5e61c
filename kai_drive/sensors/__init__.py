"""On-board sensors. A sensor reads the world through the env's PyBullet client and the ego pose; it
never knows the task. Each sensor declares the observation entries (name -> gymnasium space) it fills."""

from kai_drive.sensors.base import Mount, Sensor, ego_mount
from kai_drive.sensors.camera import SEG_CLASSES, Camera
from kai_drive.sensors.lidar import Lidar
from kai_drive.sensors.proprio import Proprioception

__all__ = ["Mount", "Sensor", "ego_mount", "Camera", "Lidar", "Proprioception", "SEG_CLASSES"]
