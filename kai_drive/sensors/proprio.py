"""Proprioception: what the car knows about itself."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from kai_drive.sensors import corruption
from kai_drive.sensors.base import Mount

#: the entries of the "state" vector, in order, with units
STATE_FIELDS: tuple[str, ...] = (
    "speed_mps",  # signed longitudinal speed
    "yaw_rate_radps",
    "steer_rad",  # current front-wheel angle
    "accel_long_mps2",  # longitudinal acceleration (finite difference over one control step)
    "accel_lat_mps2",  # lateral acceleration, speed * yaw rate
    "prev_steer",  # previous action, steering in [-1, 1]
    "prev_throttle",  # previous action, throttle (>0) / brake (<0) in [-1, 1]
)


class Proprioception:
    """The "state" vector (float32, SI units, order in :data:`STATE_FIELDS`)."""

    def __init__(self, spec: Any, dt: float, name: str = "state") -> None:
        self.spec = spec
        self.dt = dt
        self.name = name
        self._prev_speed = 0.0

    def spaces(self) -> dict[str, spaces.Space]:
        return {self.name: spaces.Box(-np.inf, np.inf, (len(STATE_FIELDS),), np.float32)}

    def reset(self, world: Any, ego: Any) -> None:
        self._prev_speed = ego.state().speed_mps

    def read(self, world: Any, ego: Any, mount: Mount, rng: np.random.Generator, out: dict) -> None:
        st = ego.state()
        accel = (st.speed_mps - self._prev_speed) / self.dt
        self._prev_speed = st.speed_mps
        steer_cmd, throttle_cmd = ego.last_command
        vec = np.array(
            [st.speed_mps, st.yaw_rate_radps, st.steer_rad, accel, st.speed_mps * st.yaw_rate_radps, steer_cmd, throttle_cmd],
            dtype=np.float32,
        )
        out[self.name] = corruption.vector_noise(vec, self.spec.noise_std, rng)
