"""The PyBullet bodies of a procedural road: ground, surface, lane markings and edge bodies.

:func:`build_road` creates them in one PyBullet world, through the ``BulletClient`` it is given, around
a :class:`kai_drive.sim.route.Route` (the road's centre line) with a
:class:`kai_drive.sim.route.RoadLayout` (the cross-section). The geometry itself is in
:mod:`kai_drive.sim.route`.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from kai_drive.sim.bullet import pybullet
from kai_drive.sim.route import RoadLayout, Route

__all__ = ["build_road", "DEFAULT_COLORS"]


DEFAULT_COLORS: dict[str, tuple[float, float, float, float]] = {
    "ground": (0.36, 0.46, 0.30, 1.0),
    "road": (0.22, 0.22, 0.24, 1.0),
    "marking": (0.95, 0.95, 0.92, 1.0),
    "barrier": (0.78, 0.74, 0.66, 1.0),
}

_ROAD_Z = 0.005  # paved surface height, m
_MARKING_Z = 0.010  # painted lines height, m
_MAX_COMPOUND = 16  # PyBullet silently drops children beyond 16 in createCollisionShapeArray


# ---------------------------------------------------------------------------------------------
# in-memory meshes without leaking memory
# ---------------------------------------------------------------------------------------------
class _MeshArgs:
    """Reusable Python lists for ``createVisualShape(GEOM_MESH, vertices=, indices=, normals=)``.

    PyBullet (3.2.7 and bullet3 master, ``examples/pybullet/pybullet.c``) leaks references to what it
    is given: ``extractVertices`` / ``extractIndices`` / ``extractUVs`` never ``Py_DECREF`` the
    ``PySequence_Fast`` of the outer list nor the ``PySequence_GetItem`` of every [x, y, z] row, and
    they run twice per call (count, then copy). Fresh lists from ``ndarray.tolist()`` (every vertex and
    normal row with its floats, every index list) therefore stayed alive forever: ~0.3 MB per driving
    reset, whatever ``resetSimulation`` freed on the C++ side (issue 1b). Here the outer lists
    and the rows are the same Python objects on every call, their *contents* overwritten in place, so
    the leaked references pin only these buffers (bounded by the largest mesh ever built) and the old
    floats and ints are freed as usual. The values passed are the same, so the meshes are bit-identical.

    One instance per process, guarded by a lock (the buffers are shared by every world's client).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vertex_rows: list[list[float]] = []
        self._normal_rows: list[list[float]] = []
        self._vertices: list[list[float]] = []
        self._normals: list[list[float]] = []
        self._indices: list[int] = []

    @staticmethod
    def _fill(pool: list[list[float]], out: list[list[float]], values: np.ndarray) -> None:
        rows = np.asarray(values, dtype=float).reshape(-1, 3).tolist()
        while len(pool) < len(rows):
            pool.append([0.0, 0.0, 0.0])
        for row, new in zip(pool, rows):
            row[:] = new
        out[:] = pool[: len(rows)]

    def create_visual(self, client, vertices: np.ndarray, indices: np.ndarray, normals: np.ndarray, rgba) -> int:
        """``client.createVisualShape(GEOM_MESH, ...)`` of ``vertices`` (n, 3) m, triangle ``indices``
        (3 m,) and per-vertex ``normals`` (n, 3), coloured ``rgba``; returns the visual shape id."""
        with self._lock:
            self._fill(self._vertex_rows, self._vertices, vertices)
            self._fill(self._normal_rows, self._normals, normals)
            self._indices[:] = np.asarray(indices).ravel().tolist()
            try:
                return client.createVisualShape(
                    pybullet.GEOM_MESH, vertices=self._vertices, indices=self._indices, normals=self._normals,
                    rgbaColor=list(rgba),
                )
            finally:  # keep only the reusable rows referenced, not the last mesh's size
                self._indices.clear()


_MESH_ARGS = _MeshArgs()


def _up_normals(n: int) -> np.ndarray:
    """(n, 3) normals along +z."""
    out = np.zeros((n, 3))
    out[:, 2] = 1.0
    return out


def _mesh_visual(client, vertices: np.ndarray, indices: np.ndarray, normals: np.ndarray, rgba) -> int:
    """A visual mesh shape (see :class:`_MeshArgs` for why it does not pass fresh lists)."""
    return _MESH_ARGS.create_visual(client, vertices, indices, normals, rgba)


def _stations(length_m: float, step_m: float) -> np.ndarray:
    n = max(1, int(math.ceil(length_m / step_m - 1e-9)))
    return np.linspace(0.0, length_m, n + 1)


def _adaptive_stations(route: Route, tol_m: float, max_step_m: float, d_max: float) -> np.ndarray:
    """Stations (m) along the route so that chords at |d| <= d_max deviate < tol_m from the curve.

    A chord of length c on a curve of curvature k deviates by k c^2 / 8 (the sagitta), so the
    step is sqrt(8 tol / k_eff) with k_eff the curvature of the tightest offset curve; straights
    get ``max_step_m``.
    """
    kabs = np.abs(route.curvature)
    k_eff = kabs / np.maximum(1.0 - kabs * d_max, 0.1)
    allowed = np.full(len(kabs), float(max_step_m))
    curved = k_eff > 1e-12
    allowed[curved] = np.minimum(np.sqrt(8.0 * tol_m / k_eff[curved]), max_step_m)
    allowed = np.maximum(allowed, min(0.25, max_step_m))
    S = route.s
    L = route.length_m
    out = [0.0]
    s = 0.0
    i0 = 0
    while L - s > 1e-9:
        step = float(max_step_m)
        while True:  # shrink until the step honours every sample it spans
            i1 = int(np.searchsorted(S, s + step, side="right"))
            new = float(allowed[i0 : i1 + 1].min())
            if new >= step - 1e-9:
                break
            step = new
        s = min(s + step, L)
        if L - s < 0.25 * step:  # avoid a sliver at the end
            s = L
        out.append(s)
        i0 = max(int(np.searchsorted(S, s, side="right")) - 1, 0)
    return np.asarray(out)


def _strip_mesh(route: Route, S: np.ndarray, d_right, d_left, z: float):
    """Flat quad strips between offsets d_right < d_left over station rows S (m, k).

    Returns (vertices (2*m*k, 3), indices (6*m*(k-1),)) with upward-facing (CCW from above) triangles.
    """
    S = np.atleast_2d(S)
    m, k = S.shape
    flat = S.ravel()
    r = route.poses_at(flat, d_right)
    l = route.poses_at(flat, d_left)
    v = np.empty((m * k * 2, 3))
    v[0::2, :2] = r[:, :2]
    v[1::2, :2] = l[:, :2]
    v[:, 2] = z
    base = (np.arange(m)[:, None] * k + np.arange(k - 1)[None, :]).ravel() * 2
    # rails A = right (even), B = left (odd): (A_i, A_i+1, B_i), (B_i, A_i+1, B_i+1)
    idx = np.stack([base, base + 2, base + 1, base + 1, base + 2, base + 3], axis=1).ravel()
    return v, idx


def _barrier_visual(
    route: Route, s: np.ndarray, side: float, d_in: float, thick: float, height: float,
    caps: tuple[bool, bool] = (True, True),
):
    """Mesh (vertices, indices, normals) of a stretch of an edge body over stations ``s`` (m):
    inner wall, top, outer wall, and end caps where ``caps`` (start, end) say so."""
    d_out = d_in + thick
    p_in = route.poses_at(s, side * d_in)
    p_out = route.poses_at(s, side * d_out)
    k = len(s)
    h = p_in[:, 2]
    nl = np.stack([-np.sin(h), np.cos(h), np.zeros(k)], axis=1)  # left normal of the route
    zero, top = np.zeros(k), np.full(k, height)

    def pts(p, z):
        return np.stack([p[:, 0], p[:, 1], z], axis=1)

    # faces as rail pairs (A, B, normal); triangles (A_i, A_i+1, B_i), (B_i, A_i+1, B_i+1) face tangent x (B-A)
    right_in, right_out = (p_in, p_out) if side > 0 else (p_out, p_in)  # right/left rails of the top face
    faces = [(pts(right_in, top), pts(right_out, top), np.tile([0.0, 0.0, 1.0], (k, 1)))]
    inner_normal = -side * nl
    outer_normal = side * nl
    if side > 0:  # left barrier: inner face looks right (-d): A = bottom, B = top
        faces.append((pts(p_in, zero), pts(p_in, top), inner_normal))
        faces.append((pts(p_out, top), pts(p_out, zero), outer_normal))
    else:  # right barrier: inner face looks left (+d): A = top, B = bottom
        faces.append((pts(p_in, top), pts(p_in, zero), inner_normal))
        faces.append((pts(p_out, zero), pts(p_out, top), outer_normal))
    verts, norms, idx = [], [], []
    off = 0
    base = np.arange(k - 1) * 2
    for A, B, nrm in faces:
        v = np.empty((2 * k, 3))
        v[0::2], v[1::2] = A, B
        verts.append(v)
        norms.append(np.repeat(nrm, 2, axis=0))
        idx.append((np.stack([base, base + 2, base + 1, base + 1, base + 2, base + 3], axis=1) + off).ravel())
        off += 2 * k
    # end caps (two triangles each), facing backwards at s=0 and forwards at s=L
    for i, sgn, want in ((0, -1.0, caps[0]), (k - 1, 1.0, caps[1])):
        if not want:
            continue
        t = np.array([math.cos(h[i]), math.sin(h[i]), 0.0]) * sgn
        q = np.array([[p_in[i, 0], p_in[i, 1], 0.0], [p_out[i, 0], p_out[i, 1], 0.0],
                      [p_out[i, 0], p_out[i, 1], height], [p_in[i, 0], p_in[i, 1], height]])
        tri = np.array([0, 1, 2, 0, 2, 3])
        # orient so the normal of (q0, q1, q2) points along t
        nq = np.cross(q[1] - q[0], q[2] - q[0])
        if float(nq @ t) < 0:
            tri = np.array([0, 2, 1, 0, 3, 2])
        verts.append(q)
        norms.append(np.tile(t, (4, 1)))
        idx.append(tri + off)
        off += 4
    return np.concatenate(verts), np.concatenate(idx), np.concatenate(norms)


def _barrier_boxes(route: Route, step_m: float, side: float, d_in: float, thick: float, height: float):
    """Boxes (centres (M,3), yaws (M,), half extents (M,3)) approximating one edge body.

    Each box's inner face is offset by half the chord sagitta so the polygonal face stays within
    ~kappa*step^2/16 of the ideal curve; boxes are lengthened to close the wedge gaps on the
    outside of curves.
    """
    s_edges = _stations(route.length_m, step_m)
    s_mid = 0.5 * (s_edges[:-1] + s_edges[1:])
    seg = np.diff(s_edges)
    k_mid = np.array([route.curvature_at(float(v)) for v in s_mid])
    d_face = side * d_in
    # curvature of the offset curve at d: k / (1 - k d); sagitta shift toward its centre (+ left)
    denom = 1.0 - k_mid * d_face
    k_off = np.where(np.abs(denom) > 1e-6, k_mid / np.where(np.abs(denom) > 1e-6, denom, 1.0), 0.0)
    chord = seg * np.abs(denom)
    shift = k_off * chord * chord / 16.0
    d_center = d_face + shift + side * 0.5 * thick
    p = route.poses_at(s_mid, d_center)
    dtheta = np.abs(k_mid) * seg
    half_len = 0.5 * chord * (1.0 + np.abs(k_mid) * thick) + 0.5 * thick * dtheta + 0.01
    centres = np.stack([p[:, 0], p[:, 1], np.full(len(p), 0.5 * height)], axis=1)
    halves = np.stack([half_len, np.full(len(p), 0.5 * thick), np.full(len(p), 0.5 * height)], axis=1)
    return centres, p[:, 2], halves, s_edges


def _create_edge_body(client, route, layout, side, rgba, s_vis, box_step_m) -> int:
    d_in = layout.edge_offset_m
    thick = layout.barrier_thickness_m
    height = layout.edge_height_m
    centres, yaws, halves, s_edges = _barrier_boxes(route, box_step_m, side, d_in, thick, height)
    quats = np.zeros((len(yaws), 4))
    quats[:, 2] = np.sin(0.5 * yaws)
    quats[:, 3] = np.cos(0.5 * yaws)
    shapes, visuals = [], []
    n_boxes = len(yaws)
    for a in range(0, n_boxes, _MAX_COMPOUND):
        b = min(a + _MAX_COMPOUND, n_boxes)
        # every link carries the visual of its own stretch: PyBullet renders the collision shapes
        # of a link without a visual shape (~1500 extra triangles per barrier in TinyRenderer)
        lo, hi = s_edges[a], s_edges[b]
        s_chunk = np.concatenate(([lo], s_vis[(s_vis > lo + 1e-6) & (s_vis < hi - 1e-6)], [hi]))
        v, idx, nrm = _barrier_visual(route, s_chunk, side, d_in, thick, height, caps=(a == 0, b == n_boxes))
        visuals.append(_mesh_visual(client, v, idx, nrm, rgba))
        shapes.append(
            client.createCollisionShapeArray(
                [pybullet.GEOM_BOX] * (b - a),
                halfExtents=halves[a:b].tolist(),
                collisionFramePositions=centres[a:b].tolist(),
                collisionFrameOrientations=quats[a:b].tolist(),
            )
        )
    links = shapes[1:]
    n = len(links)
    return client.createMultiBody(
        baseMass=0,
        baseCollisionShapeIndex=shapes[0],
        baseVisualShapeIndex=visuals[0],
        basePosition=[0, 0, 0],
        linkMasses=[0] * n,
        linkCollisionShapeIndices=links,
        linkVisualShapeIndices=visuals[1:],
        linkPositions=[[0, 0, 0]] * n,
        linkOrientations=[[0, 0, 0, 1]] * n,
        linkInertialFramePositions=[[0, 0, 0]] * n,
        linkInertialFrameOrientations=[[0, 0, 0, 1]] * n,
        linkParentIndices=[0] * n,
        linkJointTypes=[pybullet.JOINT_FIXED] * n,
        linkJointAxis=[[0, 0, 1]] * n,
    )


def _markings_mesh(route: Route, layout: RoadLayout, s_st: np.ndarray, mesh_tolerance_m: float):
    """One mesh of every painted line: solid edge lines on the outer lane edges (over stations ``s_st``)
    and dashed lane separators; returns (vertices, indices)."""
    e = layout.edge_offset_m
    w2 = 0.5 * layout.marking_width_m
    hw = layout.half_width_m
    parts = []
    for dc in (-hw, hw):
        parts.append(_strip_mesh(route, s_st, dc - w2, dc + w2, _MARKING_Z))
    if layout.n_lanes > 1:
        dash, gap = layout.dashed_m
        period = dash + gap
        starts = np.arange(0.0, route.length_m, period)
        ends = np.minimum(starts + dash, route.length_m)
        keep = ends - starts > 0.05
        starts, ends = starts[keep], ends[keep]
        k_max = float(np.abs(route.curvature).max()) / max(1.0 - float(np.abs(route.curvature).max()) * e, 0.1)
        ns = max(1, int(math.ceil(dash / math.sqrt(8.0 * mesh_tolerance_m / max(k_max, 1e-12)))))
        frac = np.linspace(0.0, 1.0, ns + 1)
        S = starts[:, None] + (ends - starts)[:, None] * frac[None, :]
        for lane in range(1, layout.n_lanes):
            dc = -hw + lane * layout.lane_width_m
            parts.append(_strip_mesh(route, S, dc - w2, dc + w2, _MARKING_Z))
    verts, inds, off = [], [], 0
    for v, idx in parts:
        verts.append(v)
        inds.append(idx + off)
        off += len(v)
    return np.concatenate(verts), np.concatenate(inds)


def _ground_body(client, route: Route, rgba, ground_margin_m: float, ground_cell_m: float) -> int:
    """The ground: an infinite collision plane (top at z = 0) with, as visual, a grid of flat quads over
    the route's bounding box + margin (small cells keep TinyRenderer's per-triangle bounding boxes small)."""
    lo = route.xy.min(axis=0) - ground_margin_m
    hi = route.xy.max(axis=0) + ground_margin_m
    nx = max(1, int(math.ceil((hi[0] - lo[0]) / ground_cell_m)))
    ny = max(1, int(math.ceil((hi[1] - lo[1]) / ground_cell_m)))
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], nx + 1), np.linspace(lo[1], hi[1], ny + 1), indexing="ij")
    gv = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], axis=1)
    q = (np.arange(nx)[:, None] * (ny + 1) + np.arange(ny)[None, :]).ravel()
    # cell corners: q (x0,y0), q+ny+1 (x1,y0), q+ny+2 (x1,y1), q+1 (x0,y1); CCW from above
    gi = np.stack([q, q + ny + 1, q + ny + 2, q, q + ny + 2, q + 1], axis=1).ravel()
    g_vis = _mesh_visual(client, gv, gi, _up_normals(len(gv)), rgba)
    g_col = client.createCollisionShape(pybullet.GEOM_PLANE)
    ground = client.createMultiBody(0, g_col, g_vis, [0, 0, 0])
    # Bullet multiplies the two surfaces' friction: 1.0 here gives the tyres their own 0.95 grip
    client.changeDynamics(ground, -1, lateralFriction=1.0)
    return ground


def build_road(  # long: half of it is the docstring describing every body
    client,
    route: Route,
    layout: RoadLayout,
    colors: dict | None = None,
    *,
    mesh_tolerance_m: float = 0.05,
    mesh_max_step_m: float = 10.0,
    box_step_m: float = 2.0,
    ground_margin_m: float = 150.0,
    ground_cell_m: float = 1000.0,
) -> dict[str, int]:
    """Create the road in a PyBullet world; returns body ids by name.

    Bodies:
        "ground": static collision plane (top surface z = 0) with a flat coloured quad as visual,
            covering the route's bounding box plus ``ground_margin_m`` (not plane.urdf: its texture
            makes TinyRenderer much slower).
        "road": ONE visual-only mesh of the paved surface (lanes + shoulders), 5 mm above z = 0.
        "markings": ONE visual-only mesh of all painted lines, 10 mm above z = 0: solid edge lines
            centred on the outer lane edges (d = +-half_width_m) and dashed lane separators.
        "barrier_left", "barrier_right": ONE static body each (the edge: barrier or curb), inner face
            at d = +-edge_offset_m. Collision is a fixed-base multibody of convex boxes (a compound
            of <= 16 boxes per link, about ``box_step_m`` long each) following the curve; visual is
            one smooth mesh.

    Args:
        client: a ``pybullet_utils.bullet_client.BulletClient``; every call goes through it.
        route: the reference line (road centre).
        layout: the cross-section.
        colors: optional overrides {"ground", "road", "marking", "barrier": rgba}.
        mesh_tolerance_m: largest deviation (m) of the visual meshes' chords from the true curves;
            stations are spaced by curvature (long quads on straights, short ones in curves).
        mesh_max_step_m: longest station spacing of the visual meshes, m.
        box_step_m: length of the collision boxes of the edge bodies, m.
        ground_margin_m: ground extent beyond the route's bounding box, m.

    Creation is deterministic: same inputs -> same bodies, in the same order.
    """
    col = dict(DEFAULT_COLORS)
    if colors:
        unknown = set(colors) - set(col)
        if unknown:
            raise ValueError(f"unknown color keys {sorted(unknown)}; expected {sorted(col)}")
        col.update(colors)
    bodies: dict[str, int] = {}

    # paved surface
    e = layout.edge_offset_m
    s_st = _adaptive_stations(route, mesh_tolerance_m, mesh_max_step_m, e + layout.barrier_thickness_m)
    v, idx = _strip_mesh(route, s_st, -e, e, _ROAD_Z)
    r_vis = _mesh_visual(client, v, idx, _up_normals(len(v)), col["road"])
    bodies["road"] = client.createMultiBody(0, -1, r_vis, [0, 0, 0])

    # markings: solid outer edge lines + dashed separators
    v, idx = _markings_mesh(route, layout, s_st, mesh_tolerance_m)
    m_vis = _mesh_visual(client, v, idx, _up_normals(len(v)), col["marking"])
    bodies["markings"] = client.createMultiBody(0, -1, m_vis, [0, 0, 0])

    # edges
    bodies["barrier_left"] = _create_edge_body(client, route, layout, +1.0, col["barrier"], s_st, box_step_m)
    bodies["barrier_right"] = _create_edge_body(client, route, layout, -1.0, col["barrier"], s_st, box_step_m)
    # ground, created last: TinyRenderer draws in creation order and rejects hidden pixels by
    # depth before shading them, so drawing the big ground after the road is cheaper.
    bodies["ground"] = _ground_body(client, route, col["ground"], ground_margin_m, ground_cell_m)
    return {k: bodies[k] for k in ("ground", "road", "markings", "barrier_left", "barrier_right")}
