"""Graspable objects: a fixed train/test split of object models, and spawning them in a tray.

Models
------
* ``urdf/NNN``: pybullet_data's ``random_urdfs/NNN/NNN.urdf`` (1000 random convex-ish blobs).
  **Train: 000-899, test: 900-999.** ``urdf/168`` is excluded from both (its mesh is degenerate:
  PyBullet loads it with an empty AABB).
* ``shape/<kind>``: primitives built with ``createCollisionShape``. **Train: box, cylinder;
  test: capsule, sphere.**

The split is fixed (it is part of the env's definition; :data:`SPLITS` never depends on a seed) and
disjoint; ``tests/test_grasp.py`` pins its sizes and a digest of its names.

Every object is scaled so that the longest side of its bounding box is ``size_m`` (drawn per object),
which keeps it graspable by the Panda's 8 cm gripper in any orientation. Its mass, colour, position and
yaw are drawn from the scenario generator, and its inertia is set from its scaled bounding box (the
stock URDFs carry a placeholder inertia of 1 kg m^2).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet_data

from kai_drive.sim.bullet import pybullet

__all__ = ["SPLITS", "ObjectModel", "Spawned", "model_names", "load_model", "spawn_object", "object_points"]

_URDF_DIR = Path(pybullet_data.getDataPath()) / "random_urdfs"
BROKEN_URDFS = frozenset({168})
TRAIN_URDF_IDS = tuple(i for i in range(0, 900) if i not in BROKEN_URDFS)
TEST_URDF_IDS = tuple(i for i in range(900, 1000) if i not in BROKEN_URDFS)
TRAIN_SHAPES = ("box", "cylinder")
TEST_SHAPES = ("capsule", "sphere")

#: split -> (urdf model names, shape model names); fixed, disjoint
SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (tuple(f"urdf/{i:03d}" for i in TRAIN_URDF_IDS), tuple(f"shape/{s}" for s in TRAIN_SHAPES)),
    "test": (tuple(f"urdf/{i:03d}" for i in TEST_URDF_IDS), tuple(f"shape/{s}" for s in TEST_SHAPES)),
}


def model_names(split: str) -> tuple[str, ...]:
    """Every model name of ``split`` ("train" or "test"): random URDFs first, then shapes."""
    if split not in SPLITS:
        raise ValueError(f"object split must be 'train' or 'test', got {split!r}")
    urdfs, shapes = SPLITS[split]
    return urdfs + shapes


@dataclass(frozen=True)
class ObjectModel:
    """A model at unit scale: its name and a point cloud (N, 3) of its surface in the body frame (m)."""

    name: str
    points: np.ndarray  # unit-scale points (hull vertices for meshes, samples for shapes)

    @property
    def extent(self) -> np.ndarray:
        return self.points.max(axis=0) - self.points.min(axis=0)


_MESH_RE = re.compile(r'<mesh\s+filename="([^"]+)"\s+scale="([^"]+)"')


@functools.lru_cache(maxsize=None)
def load_model(name: str) -> ObjectModel:
    """The model's geometry at unit scale (parsed from its files once per process)."""
    kind, ident = name.split("/", 1)
    if kind == "urdf":
        urdf = _URDF_DIR / ident / f"{ident}.urdf"
        m = _MESH_RE.search(urdf.read_text())
        if m is None:
            raise ValueError(f"{urdf}: no <mesh filename=... scale=...> found")
        scale = np.array([float(v) for v in m.group(2).split()])
        verts = []
        with open(urdf.parent / m.group(1)) as fh:
            for line in fh:
                if line.startswith("v "):
                    verts.append([float(v) for v in line.split()[1:4]])
        pts = np.asarray(verts) * scale
    elif kind == "shape":
        pts = _shape_points(ident)
    else:
        raise ValueError(f"unknown object model {name!r}; models are 'urdf/NNN' or 'shape/<kind>'")
    pts.setflags(write=False)
    return ObjectModel(name, pts)


# shapes at unit scale: longest side 1.0
_SHAPES = {
    # kind: (half extents or radius/length as used by createCollisionShape at unit scale)
    "box": (0.5, 0.3, 0.35),  # half extents x, y, z
    "cylinder": (0.28, 1.0),  # radius, length (upright)
    "capsule": (0.22, 0.56),  # radius, cylinder length (lying along x: total length 1.0)
    "sphere": (0.5,),
}


def _shape_points(kind: str) -> np.ndarray:
    if kind not in _SHAPES:
        raise ValueError(f"unknown shape {kind!r}; shapes: {sorted(_SHAPES)}")
    a = np.linspace(0, 2 * math.pi, 24, endpoint=False)
    if kind == "box":
        hx, hy, hz = _SHAPES["box"]
        return np.array([[sx * hx, sy * hy, sz * hz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    if kind == "cylinder":
        r, h = _SHAPES["cylinder"]
        ring = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        return np.concatenate([np.c_[ring, np.full(24, -h / 2)], np.c_[ring, np.full(24, h / 2)]])
    if kind == "capsule":  # axis along x after the spawn rotation
        r, h = _SHAPES["capsule"]
        ring = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        pts = [np.c_[np.full(24, s * h / 2), ring] for s in (-1, 1)]
        pts.append(np.array([[-(h / 2 + r), 0, 0], [h / 2 + r, 0, 0]]))
        return np.concatenate(pts)
    r = _SHAPES["sphere"][0]
    e = np.linspace(-math.pi / 2, math.pi / 2, 7)
    return np.array([[r * math.cos(t) * math.cos(p), r * math.cos(t) * math.sin(p), r * math.sin(t)] for t in e for p in a])


@dataclass
class Spawned:
    """An object in the world: its body, model, scale (m per unit) and scaled points (body frame)."""

    body_id: int
    model: str
    scale: float
    mass_kg: float
    color: tuple[float, float, float, float]
    points: np.ndarray  # (N, 3) in the body frame, m


def object_points(client, obj: Spawned) -> np.ndarray:
    """The object's points (N, 3) in the world frame at its current pose."""
    pos, orn = client.getBasePositionAndOrientation(obj.body_id)
    rot = np.asarray(client.getMatrixFromQuaternion(orn)).reshape(3, 3)
    return obj.points @ rot.T + np.asarray(pos)


def spawn_object(
    client,
    model: str,
    size_m: float,
    mass_kg: float,
    color,
    xy,
    floor_z: float,
    yaw: float,
    friction: float = 1.0,
) -> Spawned:
    """Create ``model`` scaled to a longest side of ``size_m`` (m), standing on ``floor_z`` at ``xy``."""
    unit = load_model(model)
    scale = float(size_m / unit.extent.max())
    orn_spawn = pybullet.getQuaternionFromEuler((0.0, 0.0, yaw))
    kind, ident = model.split("/", 1)
    if kind == "urdf":
        body = client.loadURDF(
            str(_URDF_DIR / ident / f"{ident}.urdf"), [0, 0, 0], orn_spawn, globalScaling=scale
        )
    else:
        body = _create_shape(client, ident, scale, orn_spawn)
    points = unit.points * scale  # capsule points lie along x, like its collision frame
    rot = np.asarray(client.getMatrixFromQuaternion(orn_spawn)).reshape(3, 3)
    z = floor_z - float((points @ rot.T)[:, 2].min()) + 0.002
    client.resetBasePositionAndOrientation(body, [float(xy[0]), float(xy[1]), z], orn_spawn)
    ext = points.max(axis=0) - points.min(axis=0)
    inertia = [mass_kg / 12.0 * (ext[1] ** 2 + ext[2] ** 2), mass_kg / 12.0 * (ext[0] ** 2 + ext[2] ** 2),
               mass_kg / 12.0 * (ext[0] ** 2 + ext[1] ** 2)]
    client.changeDynamics(
        body, -1, mass=float(mass_kg), localInertiaDiagonal=inertia, lateralFriction=friction,
        spinningFriction=0.002, rollingFriction=0.0002,
    )
    client.changeVisualShape(body, -1, rgbaColor=list(color))
    return Spawned(body, model, scale, float(mass_kg), tuple(float(c) for c in color), points)


def _create_shape(client, kind: str, scale: float, orn) -> int:
    dims = _SHAPES[kind]
    if kind == "box":
        he = [d * scale for d in dims]
        col = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=he)
        vis = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=he)
        frame = [0, 0, 0, 1]
    elif kind == "cylinder":
        r, h = dims[0] * scale, dims[1] * scale
        col = client.createCollisionShape(pybullet.GEOM_CYLINDER, radius=r, height=h)
        vis = client.createVisualShape(pybullet.GEOM_CYLINDER, radius=r, length=h)
        frame = [0, 0, 0, 1]
    elif kind == "capsule":
        r, h = dims[0] * scale, dims[1] * scale
        frame = list(pybullet.getQuaternionFromEuler((0.0, math.pi / 2, 0.0)))  # axis z -> x
        col = client.createCollisionShape(pybullet.GEOM_CAPSULE, radius=r, height=h, collisionFrameOrientation=frame)
        vis = client.createVisualShape(pybullet.GEOM_CAPSULE, radius=r, length=h, visualFrameOrientation=frame)
    else:
        r = dims[0] * scale
        col = client.createCollisionShape(pybullet.GEOM_SPHERE, radius=r)
        vis = client.createVisualShape(pybullet.GEOM_SPHERE, radius=r)
    return client.createMultiBody(0.1, col, vis, [0, 0, 0], orn)
