"""What every sensor shares: the pose it is mounted on, the sensor contract, and the sensor registry.

A sensor subclasses :class:`Sensor`, declares the key of its section under ``sensors:`` in the env spec
(:class:`kai_drive.specs.SensorsSpec` has one field per key, ``enabled`` among its keys), how the
scenario's ``sensor_noise`` factors map onto its spec, and what a lost reading of each of its
observation entries is; :func:`register_sensor` makes the env build it. Adding a sensor touches its
module and its spec only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

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


class Sensor:
    """A sensor fills one or more observation entries (subclass it and :func:`register_sensor` it).

    Class attributes:
        key: its section of the env spec, ``sensors.<key>`` (a spec with ``enabled``).
        noise_factors: scenario ``sensor_noise`` factor -> field of its spec that the factor sets per
            episode (e.g. ``{"lidar_dropout": "dropout"}``); in the order the factors are drawn.
        missing: observation entry -> the value every element of a lost reading takes (a black image
            is 0, a lidar beam with no return is 1.0).
    """

    key: ClassVar[str]
    noise_factors: ClassVar[dict[str, str]] = {}
    missing: ClassVar[dict[str, float]] = {}

    spec: Any

    @classmethod
    def from_spec(cls, spec: Any, task: Any) -> "Sensor":
        """The sensor of spec section ``spec`` on ``task``'s robot (built once per env)."""
        return cls(spec)

    def spaces(self) -> dict[str, spaces.Space]:
        """Observation entries this sensor produces, name -> space."""
        raise NotImplementedError

    def reset(self, world: Any, ego: Any) -> None:
        """Called after the scene is built (bodies exist), before the first read."""

    def set_light(self, light: dict) -> None:
        """The light of the coming episode (complete getCameraImage light arguments); only images see it."""

    def noise_update(self, sensor_noise: Any) -> dict[str, float]:
        """Spec fields set by the episode's ``sensor_noise`` record (see :attr:`noise_factors`)."""
        return {field: getattr(sensor_noise, factor) for factor, field in self.noise_factors.items()}

    def episode_update(self, record: Any) -> dict[str, Any]:
        """Spec fields set by the episode's scenario record (applied to the env's base spec for this
        episode only): by default the ``sensor_noise`` factors (:meth:`noise_update`)."""
        noise = getattr(record, "sensor_noise", None)
        return self.noise_update(noise) if noise else {}

    def read(self, world: Any, ego: Any, mount: Mount, rng: np.random.Generator, out: dict) -> None:
        """Write this sensor's entries into ``out``; ``rng`` is the env's sensor-noise generator."""
        raise NotImplementedError


#: spec key (``sensors.<key>``) -> sensor class; filled by :func:`register_sensor`
SENSORS: dict[str, type[Sensor]] = {}


def register_sensor(cls: type[Sensor]) -> type[Sensor]:
    """Class decorator: the env builds ``cls`` from ``sensors.<cls.key>`` when that section is enabled."""
    SENSORS[cls.key] = cls
    return cls


def _registered(key: str) -> type[Sensor]:
    try:
        return SENSORS[key]
    except KeyError:
        raise ValueError(f"sensors.{key}: no sensor is registered under this key; known: {sorted(SENSORS)}") from None


def build_sensors(sensors_spec: Any, task: Any) -> list[Sensor]:
    """The enabled sensors of an env's ``sensors:`` section, in the order of its fields."""
    out = []
    for key in type(sensors_spec).model_fields:
        spec = getattr(sensors_spec, key)
        if spec.enabled:
            out.append(_registered(key).from_spec(spec, task))
    return out


def noise_defaults(sensors_spec: Any) -> dict[str, float]:
    """Scenario ``sensor_noise`` factor -> its value in the ``sensors:`` section (what an episode gets
    when the scenario does not draw it), every sensor's, enabled or not, in the order of the fields."""
    out: dict[str, float] = {}
    for key in type(sensors_spec).model_fields:
        spec = getattr(sensors_spec, key)
        out.update({factor: getattr(spec, field) for factor, field in _registered(key).noise_factors.items()})
    return out


def missing_value(entry: str) -> float:
    """What every element of a lost reading of observation entry ``entry`` is (e.g. "lidar" -> 1.0)."""
    for cls in SENSORS.values():
        if entry in cls.missing:
            return cls.missing[entry]
    raise KeyError(f"no registered sensor produces the observation entry {entry!r}")
