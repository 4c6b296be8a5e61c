"""Proprioception: what the car knows about itself."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from kai_drive.sensors import corruption
from kai_drive.sensors.base import Mount, Sensor, register_sensor


@register_sensor
class Proprioception(Sensor):
    """The "state" vector: what the robot knows about itself (float32, SI units).

    The robot (the task's ``ego``: a car, an arm) says what that is: it has ``PROPRIO_FIELDS`` (names
    with units, in order) and ``proprioception() -> np.ndarray``. For the car see
    :data:`kai_drive.sim.vehicle.Vehicle.PROPRIO_FIELDS`. Spec section ``sensors.state``; a lost
    reading is 0.
    """

    key = "state"
    noise_factors = {"state_noise_std": "noise_std"}
    missing = {"state": 0.0}

    @classmethod
    def from_spec(cls, spec: Any, task: Any) -> "Proprioception":
        """The task's robot declares the fields (``task.PROPRIO_FIELDS``)."""
        return cls(spec, task.PROPRIO_FIELDS)

    def __init__(self, spec: Any, fields: tuple[str, ...], name: str = "state") -> None:
        self.spec = spec
        self.fields = tuple(fields)
        self.name = name

    def spaces(self) -> dict[str, spaces.Space]:
        return {self.name: spaces.Box(-np.inf, np.inf, (len(self.fields),), np.float32)}

    def reset(self, world: Any, ego: Any) -> None:
        if tuple(ego.PROPRIO_FIELDS) != self.fields:
            raise ValueError(f"robot proprioception {ego.PROPRIO_FIELDS} does not match the declared {self.fields}")

    def read(self, world: Any, ego: Any, mount: Mount, rng: np.random.Generator, out: dict) -> None:
        vec = np.asarray(ego.proprioception(), dtype=np.float32)
        out[self.name] = corruption.vector_noise(vec, self.spec.noise_std, rng)
