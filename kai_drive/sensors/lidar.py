"""A planar scanning lidar: one ``rayTestBatch`` per sweep, ranges normalised to [0, 1]."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from kai_drive.sensors import corruption
from kai_drive.sensors.base import Mount, Sensor, register_sensor
from kai_drive.sim.world import RAY_MASK_WITHOUT_EGO


@register_sensor
class Lidar(Sensor):
    """Beams spread evenly over ``fov_deg`` around the car's forward axis, in the car's horizontal plane.

    Beam ``i`` points at azimuth ``angles[i]`` (rad, 0 = forward, + = left). A reading is
    ``distance / range_m`` in [0, 1]; 1.0 means nothing within range. The ego vehicle is invisible to
    its own lidar (collision-group mask). Spec section ``sensors.lidar``; a lost beam reads 1.0.
    """

    key = "lidar"
    noise_factors = {"lidar_noise_std": "noise_std", "lidar_dropout": "dropout"}
    missing = {"lidar": 1.0}

    def __init__(self, spec: Any, name: str = "lidar") -> None:
        self.spec = spec
        self.name = name
        n, fov = spec.beams, math.radians(spec.fov_deg)
        if spec.fov_deg >= 360.0:
            self.angles = -math.pi + np.arange(n) * (2 * math.pi / n)
        else:
            self.angles = np.linspace(-fov / 2, fov / 2, n) if n > 1 else np.zeros(1)
        self._dirs_local = np.stack([np.cos(self.angles), np.sin(self.angles), np.zeros(n)], axis=1)
        self._offset = np.array([0.0, 0.0, spec.height_m])

    def spaces(self) -> dict[str, spaces.Space]:
        return {self.name: spaces.Box(0.0, 1.0, (self.spec.beams,), np.float32)}

    def rays(self, mount: Mount) -> tuple[list, list]:
        origin = mount.to_world(self._offset)
        dirs = self._dirs_local @ mount.rotation.T
        frm = np.broadcast_to(origin, dirs.shape)
        return frm.tolist(), (origin + dirs * self.spec.range_m).tolist()

    def read(self, world: Any, ego: Any, mount: Mount, rng: np.random.Generator, out: dict) -> None:
        frm, to = self.rays(mount)
        hits = world.client.rayTestBatch(frm, to, collisionFilterMask=RAY_MASK_WITHOUT_EGO)
        ranges = np.fromiter((h[2] for h in hits), dtype=np.float32, count=len(hits))
        ranges = corruption.range_noise(ranges, self.spec.noise_std, rng)
        ranges = corruption.beam_dropout(ranges, self.spec.dropout, rng)
        out[self.name] = ranges
