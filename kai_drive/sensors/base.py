"""What every sensor shares: the pose it is mounted on, and the read interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces


@dataclass
class Mount:
    """Pose of the body a sensor is mounted on, in the world frame.

    ``position`` (3,) m; ``rotation`` (3, 3) body-to-world rotation; ``ground_z`` the z of the body's
    frame above the ground when at rest (so mount heights are given above the ground)."""

    position: np.ndarray
    rotation: np.ndarray
    ground_z: float = 0.0

    def to_world(self, offset: np.ndarray) -> np.ndarray:
        """World position of a point given in the body frame with z measured above the ground."""
        local = np.asarray(offset, dtype=np.float64) - (0.0, 0.0, self.ground_z)
        return self.position + self.rotation @ local


def ego_mount(client: Any, body_id: int, ground_z: float) -> Mount:
    """Read ``body_id``'s base pose once (one PyBullet call + one matrix) for all sensors."""
    pos, orn = client.getBasePositionAndOrientation(body_id)
    rot = np.asarray(client.getMatrixFromQuaternion(orn), dtype=np.float64).reshape(3, 3)
    return Mount(np.asarray(pos, dtype=np.float64), rot, ground_z)


class Sensor(Protocol):
    """A sensor fills one or more observation entries."""

    def spaces(self) -> dict[str, spaces.Space]:
        """Observation entries this sensor produces, name -> space."""
        ...

    def reset(self, world: Any, ego: Any) -> None:
        """Called after the scene is built (bodies exist), before the first read."""
        ...

    def read(self, world: Any, ego: Any, mount: Mount, rng: np.random.Generator, out: dict) -> None:
        """Write this sensor's entries into ``out``; ``rng`` is the env's sensor-noise generator."""
        ...
