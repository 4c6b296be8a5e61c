"""A pinhole camera fixed to a body: RGB (uint8), optional depth (metres) and semantic segmentation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from kai_drive.sensors import corruption
from kai_drive.sensors.base import Mount, Sensor, register_sensor
from kai_drive.sim.bullet import pybullet

#: semantic classes of the "segmentation" observation; a body's class is its ``World.kinds`` entry.
SEG_CLASSES: dict[str, int] = {
    "none": 0,  # sky / nothing
    "ground": 1,
    "road": 2,
    "marking": 3,
    "barrier": 4,
    "ego": 5,
    "vehicle": 6,
    "pedestrian": 7,
    "obstacle": 8,
    "distractor": 9,
    "table": 10,  # grasping
    "tray": 11,
    "object": 12,
}

#: TinyRenderer's light when getCameraImage is given no light argument (bullet3's
#: TinyRendererVisualShapeConverter defaults, z-up). The renderer KEEPS any light argument it was
#: given for every later call of the same physics server, so the camera passes this whole set on
#: every call: an image then depends only on the light of its own episode, never on the history.
RENDERER_DEFAULT_LIGHT: dict = {
    "lightDirection": [-50.0, 30.0, 100.0],
    "lightColor": [1.0, 1.0, 1.0],
    "lightDistance": 2.0,
    "lightAmbientCoeff": 0.6,
    "lightDiffuseCoeff": 0.35,
    "lightSpecularCoeff": 0.05,
    "shadow": 0,
}


def full_light(light: dict | None = None) -> dict:
    """``light`` (getCameraImage light keyword arguments, any subset) completed with the renderer's
    defaults, so that every call sets every light parameter explicitly."""
    light = dict(light or {})
    unknown = set(light) - set(RENDERER_DEFAULT_LIGHT)
    if unknown:
        raise ValueError(f"unknown light arguments {sorted(unknown)}; valid: {sorted(RENDERER_DEFAULT_LIGHT)}")
    return {**RENDERER_DEFAULT_LIGHT, **light}


@register_sensor
class Camera(Sensor):
    """Camera mounted on the ego body (spec section ``sensors.camera``).

    Args:
        spec: a :class:`kai_drive.specs.CameraSpec` (size, vertical FOV, mount position in the car frame
            with z above the ground, pitch, near/far planes, optional depth/segmentation, noise).
        name: observation key of the RGB image; depth and segmentation use "depth" / "segmentation".

    A lost frame is black (0); lost depth and segmentation are 0 too.
    """

    key = "camera"
    noise_factors = {"camera_noise_std": "noise_std", "camera_dropout": "dropout"}
    missing = {"camera": 0.0, "depth": 0.0, "segmentation": 0.0}

    def __init__(self, spec: Any, name: str = "camera") -> None:
        self.spec = spec
        self.name = name
        self.width, self.height = spec.width, spec.height
        #: the mount of the spec section; the pose of an episode is this plus the record's camera_pose
        self._base_spec = spec
        self._pose_key: tuple = ()
        self._pose(spec)
        self._proj = pybullet.computeProjectionMatrixFOV(
            spec.fov_deg, spec.width / spec.height, spec.near_m, spec.far_m
        )
        self._flags = 0 if spec.segmentation else pybullet.ER_NO_SEGMENTATION_MASK
        self._seg_lut = np.zeros(1, dtype=np.uint8)
        #: the getCameraImage light arguments (lightDirection, lightColor, light*Coeff, shadow), always
        #: the complete set (see :data:`RENDERER_DEFAULT_LIGHT`); set per episode with :meth:`set_light`
        self.light: dict = full_light()

    def set_light(self, light: dict | None) -> None:
        """Light of the coming episode: any subset of the light arguments; the rest are the defaults."""
        self.light = full_light(light)

    def spaces(self) -> dict[str, spaces.Space]:
        h, w = self.height, self.width
        out: dict[str, spaces.Space] = {self.name: spaces.Box(0, 255, (h, w, 3), np.uint8)}
        if self.spec.depth:
            out["depth"] = spaces.Box(0.0, np.float32(self.spec.far_m), (h, w), np.float32)
        if self.spec.segmentation:
            out["segmentation"] = spaces.Box(0, max(SEG_CLASSES.values()), (h, w), np.uint8)
        return out

    def reset(self, world: Any, ego: Any) -> None:
        if self.spec.segmentation:
            size = max(world.kinds, default=0) + 2
            lut = np.zeros(size, dtype=np.uint8)  # index = body id + 1 (background -1 -> 0)
            for body_id, kind in world.kinds.items():
                lut[body_id + 1] = SEG_CLASSES.get(kind, SEG_CLASSES["obstacle"])
            self._seg_lut = lut

    def _pose(self, spec: Any) -> None:
        """Offset and local view axes of ``spec``'s mount (recomputed only when the pose changes)."""
        key = (tuple(spec.position_m), spec.pitch_deg, spec.yaw_deg)
        if key == self._pose_key:
            return
        pitch, yaw = math.radians(spec.pitch_deg), math.radians(spec.yaw_deg)
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        self._fwd_local = np.array([cp * cy, cp * sy, sp])
        self._up_local = np.array([-sp * cy, -sp * sy, cp])
        self._offset = np.asarray(spec.position_m, dtype=np.float64)
        self._pose_key = key

    def episode_update(self, record: Any) -> dict[str, Any]:
        """The sensor-noise factors, and the record's ``camera_pose`` jitter as a displaced mount
        (``position_m``, ``pitch_deg``, ``yaw_deg`` of the spec section plus the displacement; nothing
        when the jitter is zero, so the default pose is the spec's, bit for bit)."""
        upd = super().episode_update(record)
        jitter = getattr(record, "camera_pose", None)
        if jitter is not None and jitter != type(jitter)():
            b = self._base_spec
            upd["position_m"] = (b.position_m[0] + jitter.dx_m, b.position_m[1] + jitter.dy_m,
                                 b.position_m[2] + jitter.dz_m)
            upd["pitch_deg"] = b.pitch_deg + math.degrees(jitter.dpitch_rad)
            upd["yaw_deg"] = b.yaw_deg + math.degrees(jitter.dyaw_rad)
        return upd

    def view_matrix(self, mount: Mount) -> tuple:
        self._pose(self.spec)
        eye = mount.to_world(self._offset)
        fwd = mount.rotation @ self._fwd_local
        up = mount.rotation @ self._up_local
        return pybullet.computeViewMatrix(eye.tolist(), (eye + fwd).tolist(), up.tolist())

    def capture(self, world: Any, mount: Mount) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw ``(rgba, depth_buffer, seg)`` from PyBullet for the current mount pose."""
        _, _, rgba, depth, seg = world.client.getCameraImage(
            self.width,
            self.height,
            self.view_matrix(mount),
            self._proj,
            renderer=world.render_flag,
            flags=self._flags,
            **self.light,
        )
        return rgba, depth, seg

    def read(self, world: Any, ego: Any, mount: Mount, rng: np.random.Generator, out: dict) -> None:
        rgba, depth, seg = self.capture(world, mount)
        rgb = np.ascontiguousarray(np.reshape(rgba, (self.height, self.width, 4))[:, :, :3])
        rgb = corruption.image_noise(rgb, self.spec.noise_std, rng)
        rgb = corruption.frame_dropout(rgb, self.spec.dropout, rng)
        out[self.name] = rgb
        if self.spec.depth:
            out["depth"] = depth_to_metres(np.reshape(depth, (self.height, self.width)), self.spec.near_m, self.spec.far_m)
        if self.spec.segmentation:
            ids = np.reshape(seg, (self.height, self.width)).astype(np.int64) + 1
            ids = np.clip(ids, 0, len(self._seg_lut) - 1)
            out["segmentation"] = self._seg_lut[ids]


def depth_to_metres(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """OpenGL depth buffer (0..1, non-linear) -> distance along the optical axis in metres."""
    buf = np.asarray(buffer, dtype=np.float32)
    z = far * near / (far - (far - near) * buf)
    return np.minimum(z, np.float32(far)).astype(np.float32)
