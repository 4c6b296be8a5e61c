"""Route and lane geometry (pure numpy): the reference line of a road and its cross-section.

Units are SI everywhere: metres, radians, curvature in 1/m. Curvature is positive when the road
turns left (counter-clockwise seen from above, +z up). The lateral offset ``d`` is positive to the
left of the direction of travel.

:class:`Segment` is one piece of a reference line (straight, circular arc, or clothoid transition
whose curvature varies linearly with arc length). :class:`Route` chains segments from a start pose,
samples the line every ``resolution_m`` and answers the hot-path queries :meth:`Route.pose_at`
(Frenet -> world) and :meth:`Route.project` (world -> Frenet). :meth:`Route.generate` draws a random,
curvature-continuous, non-self-intersecting route from a ``numpy.random.Generator``.

:class:`RoadLayout` describes the cross-section (lanes, shoulder, barrier or curb) around a route.
The PyBullet bodies of a road are built by :mod:`kai_drive.sim.road`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Segment", "Route", "RoadLayout", "wrap_angle"]

_TAU = 2.0 * math.pi
_PI = math.pi
_KINDS = ("straight", "arc", "transition")
# below this |curvature| (1/m) an interval of the polyline is treated as a straight line
_K_EPS = 1e-9
# project() with s_hint walks from the hint; if it ends farther than this (m) from the line, it
# falls back to a global search (guards against a stale hint stuck in a wrong local minimum)
_LOCAL_SEARCH_MAX_DIST_M = 12.0

# 5-point Gauss-Legendre quadrature on [-1, 1]: integrates cos/sin of a quadratic heading over a
# sub-metre interval to machine precision, so sampled points are exact on lines, arcs and clothoids.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)


def wrap_angle(a: float) -> float:
    """Wrap an angle (rad) to [-pi, pi)."""
    return (a + _PI) % _TAU - _PI


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """One piece of a reference line.

    Attributes:
        kind: "straight", "arc" (constant curvature) or "transition" (clothoid: curvature varies
            linearly with arc length from ``curvature_start`` to ``curvature_end``).
        length_m: arc length of the piece, m (> 0).
        curvature_start: curvature at the start, 1/m, positive = turning left.
        curvature_end: curvature at the end, 1/m; must equal ``curvature_start`` for "arc" and be 0
            for "straight". ``None`` means "same as curvature_start".
    """

    kind: str
    length_m: float
    curvature_start: float = 0.0
    curvature_end: float | None = None

    def __post_init__(self) -> None:
        if self.curvature_end is None:
            object.__setattr__(self, "curvature_end", float(self.curvature_start))
        if self.kind not in _KINDS:
            raise ValueError(f"Segment.kind must be one of {_KINDS}, got {self.kind!r}")
        if not (self.length_m > 0.0 and math.isfinite(self.length_m)):
            raise ValueError(f"Segment.length_m must be finite and > 0, got {self.length_m}")
        if self.kind == "straight" and (self.curvature_start != 0.0 or self.curvature_end != 0.0):
            raise ValueError("a straight segment has zero curvature")
        if self.kind == "arc" and self.curvature_start != self.curvature_end:
            raise ValueError("an arc has constant curvature (curvature_start == curvature_end)")

    @classmethod
    def straight(cls, length_m: float) -> "Segment":
        return cls("straight", float(length_m), 0.0, 0.0)

    @classmethod
    def arc(cls, length_m: float, curvature: float) -> "Segment":
        return cls("arc", float(length_m), float(curvature), float(curvature))

    @classmethod
    def transition(cls, length_m: float, curvature_start: float, curvature_end: float) -> "Segment":
        return cls("transition", float(length_m), float(curvature_start), float(curvature_end))

    @property
    def curvature_rate(self) -> float:
        """d(curvature)/ds, 1/m^2."""
        return (self.curvature_end - self.curvature_start) / self.length_m

    @property
    def heading_change(self) -> float:
        """Integral of curvature over the segment, rad."""
        return 0.5 * (self.curvature_start + self.curvature_end) * self.length_m

    def truncated(self, length_m: float) -> "Segment":
        """The first ``length_m`` metres of this segment (same kind)."""
        k1 = self.curvature_start + self.curvature_rate * length_m
        if self.kind != "transition":
            k1 = self.curvature_start
        return Segment(self.kind, float(length_m), self.curvature_start, k1)


def _segment_tables(segments: Sequence[Segment], start_heading: float):
    """Per-segment start s (m), start heading (rad), start curvature (1/m) and rate (1/m^2)."""
    n = len(segments)
    s0 = np.zeros(n)
    h0 = np.zeros(n)
    k0 = np.array([sg.curvature_start for sg in segments], dtype=float)
    dk = np.array([sg.curvature_rate for sg in segments], dtype=float)
    s, h = 0.0, float(start_heading)
    for i, sg in enumerate(segments):
        s0[i], h0[i] = s, h
        s += sg.length_m
        h += sg.heading_change
    return s0, h0, k0, dk, s, h


def _integrate(segments, start_xy, start_heading, s_query):
    """Exact heading/curvature and (quadrature-exact) positions at sorted arc lengths ``s_query``.

    Returns (xy (N,2), heading (N,), curvature (N,)).
    """
    s0, h0, k0, dk, total, _ = _segment_tables(segments, start_heading)
    s_query = np.asarray(s_query, dtype=float)

    def local(s):
        idx = np.clip(np.searchsorted(s0, s, side="right") - 1, 0, len(s0) - 1)
        u = s - s0[idx]
        return idx, u

    # grid = query points + segment boundaries, so every interval lies inside one segment
    grid = np.union1d(s_query, np.append(s0, total))
    grid = grid[(grid >= 0.0) & (grid <= total)]
    a, b = grid[:-1], grid[1:]
    mid = 0.5 * (a + b)
    idx, _ = local(mid)
    half = 0.5 * (b - a)
    nodes = mid[:, None] + half[:, None] * _GL_X[None, :]
    u = nodes - s0[idx][:, None]
    th = h0[idx][:, None] + k0[idx][:, None] * u + 0.5 * dk[idx][:, None] * u * u
    dx = half * (np.cos(th) @ _GL_W)
    dy = half * (np.sin(th) @ _GL_W)
    gx = start_xy[0] + np.concatenate(([0.0], np.cumsum(dx)))
    gy = start_xy[1] + np.concatenate(([0.0], np.cumsum(dy)))
    pos = np.searchsorted(grid, s_query)
    xy = np.stack([gx[pos], gy[pos]], axis=1)
    qi, qu = local(s_query)
    heading = h0[qi] + k0[qi] * qu + 0.5 * dk[qi] * qu * qu
    curvature = k0[qi] + dk[qi] * qu
    return xy, heading, curvature


def _draw_chunk(
    rng: np.random.Generator, total: float, length_m: float, heading: float, *, straight_m: tuple[float, float],
    transition_m: tuple[float, float], turn_rad: tuple[float, float], max_heading_rad: float,
    min_curvature_frac: float, max_curvature: float,
) -> list[Segment]:
    """One chunk of :meth:`Route.generate` (``total`` m of the route's ``length_m`` drawn so far): a
    straight, then (when the route goes on after it) a curve (transition -> arc -> transition) keeping
    the relative ``heading`` within +- ``max_heading_rad``."""
    min_straight_m, max_straight_m = straight_m
    (t_lo, t_hi), (turn_lo, turn_hi) = transition_m, turn_rad
    chunk: list[Segment] = []
    st = rng.uniform(min_straight_m, max_straight_m) if max_straight_m > min_straight_m else min_straight_m
    if st > 1e-6:
        chunk.append(Segment.straight(st))
    if total + st < length_m:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        turn = rng.uniform(turn_lo, turn_hi)
        if abs(heading + sign * turn) > max_heading_rad:
            sign = -sign
        turn = min(turn, max_heading_rad - sign * heading)
        k = rng.uniform(min_curvature_frac, 1.0) * max_curvature
        t1 = rng.uniform(t_lo, t_hi)
        t2 = rng.uniform(t_lo, t_hi)
        arc = turn / k - 0.5 * (t1 + t2)
        if arc < 0.0:  # transitions alone turn too much: lower the peak curvature
            k = turn / (0.5 * (t1 + t2))
            arc = 0.0
        ks = sign * k
        chunk.append(Segment.transition(t1, 0.0, ks))
        if arc > 1e-3:
            chunk.append(Segment.arc(arc, ks))
        chunk.append(Segment.transition(t2, ks, 0.0))
    return chunk


def _clear(xy: np.ndarray, s: np.ndarray, pts: np.ndarray, pts_s: np.ndarray, adjacent_m: float,
           min_clearance_m: float) -> bool:
    """True when no point ``xy`` (at arc lengths ``s``) comes within ``min_clearance_m`` of an earlier
    point ``pts`` (at ``pts_s``) more than ``adjacent_m`` behind it along the route."""
    if not len(pts):
        return True
    far = pts_s[None, :] < s[:, None] - adjacent_m
    if not far.any():
        return True
    d2 = ((xy[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    return not bool((d2[far] < min_clearance_m**2).any())


def _cut(chunk: list[Segment], rem: float) -> list[Segment]:
    """``chunk`` cut at ``rem`` metres (the rest of the route's length)."""
    cut: list[Segment] = []
    for sg in chunk:
        if rem <= 1e-9:
            break
        cut.append(sg if sg.length_m <= rem else sg.truncated(rem))
        rem -= cut[-1].length_m
    return cut


class Route:
    """Reference line of a road (the road's centre line), sampled every ``resolution_m``.

    Args:
        segments: the pieces of the line, in order of travel.
        start_xy: world position of s = 0, m.
        start_heading: world heading (yaw, rad, counter-clockwise from +x) at s = 0.
        resolution_m: sample spacing, m (the last interval may be shorter).

    Attributes:
        segments: tuple of :class:`Segment`.
        length_m: total arc length, m.
        s: (N,) sample arc lengths, m, from 0 to ``length_m``.
        xy: (N, 2) sample positions, m (exact up to quadrature round-off, ~1e-12 m).
        heading: (N,) heading at the samples, rad, continuous (NOT wrapped).
        curvature: (N,) curvature at the samples, 1/m.

    Between two samples the line is modelled as the circular arc that leaves the first sample with
    its heading and reaches the second sample's heading: exact on straights and arcs; on a
    transition with curvature rate c (1/m^2) it is off by at most c * resolution_m^3 / 12 (5 um for
    1/40 1/m reached over 50 m at 0.5 m resolution). :meth:`pose_at` and :meth:`project` use the
    same model, so they invert each other to round-off (to that bound exactly at a sample).

    Beyond the ends (s < 0 or s > length_m) the line continues straight along the first / last
    tangent.
    """

    def __init__(
        self,
        segments: Iterable[Segment],
        start_xy: tuple[float, float] = (0.0, 0.0),
        start_heading: float = 0.0,
        resolution_m: float = 0.5,
    ) -> None:
        self.segments: tuple[Segment, ...] = tuple(segments)
        if not self.segments:
            raise ValueError("a Route needs at least one segment")
        if not resolution_m > 0:
            raise ValueError(f"resolution_m must be > 0, got {resolution_m}")
        self.start_xy = (float(start_xy[0]), float(start_xy[1]))
        self.start_heading = float(start_heading)
        self.resolution_m = float(resolution_m)
        s0, _, _, _, total, _ = _segment_tables(self.segments, self.start_heading)
        self.length_m = float(total)
        self._seg_s0 = s0.tolist()

        n_full = int(math.floor(total / resolution_m + 1e-9))
        s = np.arange(n_full + 1, dtype=float) * resolution_m
        if total - s[-1] > 1e-6 * resolution_m:
            s = np.append(s, total)
        else:
            s[-1] = total
        if len(s) < 2:
            s = np.array([0.0, total])
        self.s = s
        self.xy, self.heading, self.curvature = _integrate(self.segments, self.start_xy, self.start_heading, s)
        for arr in (self.s, self.xy, self.heading, self.curvature):
            arr.setflags(write=False)

        # hot-path tables as Python lists (scalar indexing of lists is ~5x faster than numpy's)
        self._n = len(s)
        self._inv_res = 1.0 / self.resolution_m
        self._S = s.tolist()
        self._X = self.xy[:, 0].tolist()
        self._Y = self.xy[:, 1].tolist()
        self._H = self.heading.tolist()
        self._C = np.cos(self.heading).tolist()
        self._Sn = np.sin(self.heading).tolist()
        km = np.diff(self.heading) / np.diff(s)  # curvature of each interval's arc model
        km[np.abs(km) < _K_EPS] = 0.0
        self._KM = km.tolist() + [0.0]
        self._xs_np = np.ascontiguousarray(self.xy[:, 0])
        self._ys_np = np.ascontiguousarray(self.xy[:, 1])

    def __repr__(self) -> str:
        kinds = ",".join(sg.kind[0] for sg in self.segments)
        return f"Route(length_m={self.length_m:.1f}, segments={len(self.segments)} [{kinds}], n={self._n})"

    # -- generation ------------------------------------------------------------------------------
    @classmethod
    def generate(  # long: one rejection-sampling loop (chunks drawn by _draw_chunk); a third is the docstring
        cls,
        rng: np.random.Generator,
        length_m: float = 250.0,
        max_curvature: float = 1 / 40,
        min_straight_m: float = 20.0,
        max_straight_m: float | None = None,
        transition_m: tuple[float, float] = (10.0, 30.0),
        min_curvature_frac: float = 0.3,
        turn_rad: tuple[float, float] = (0.3, math.pi / 2),
        max_heading_rad: float = 2 * math.pi / 3,
        min_clearance_m: float = 30.0,
        start_xy: tuple[float, float] = (0.0, 0.0),
        start_heading: float = 0.0,
        resolution_m: float = 0.5,
        max_tries: int = 200,
    ) -> "Route":
        """Draw a random route from ``rng`` only (same generator state -> identical route).

        The route is straight -> transition -> arc -> transition -> straight -> ... (a curve may
        lack its arc when its transitions already turn enough). Curvature is continuous, its
        magnitude never exceeds ``max_curvature`` (1/m), the total length is exactly ``length_m``.

        Args:
            rng: the only source of randomness.
            length_m: total arc length, m.
            max_curvature: largest |curvature|, 1/m (radius >= 1/max_curvature).
            min_straight_m, max_straight_m: length range of straights, m (default max: min + 40).
            transition_m: length range of each clothoid transition, m.
            min_curvature_frac: a curve's peak |curvature| is drawn in
                [min_curvature_frac, 1] * max_curvature (lowered if the turn is small).
            turn_rad: range of the heading change of one curve, rad.
            max_heading_rad: the heading stays within start_heading +- this bound, rad.
            min_clearance_m: no point of the route comes closer than this (m) to a non-adjacent
                part of it (arc-length separation > 2 * min_clearance_m); a curve that would is
                redrawn.
            start_xy, start_heading, resolution_m: as for :class:`Route`.
            max_tries: redraws allowed before giving up (RuntimeError).
        """
        if length_m <= 0:
            raise ValueError(f"length_m must be > 0, got {length_m}")
        if not 0 < max_curvature:
            raise ValueError(f"max_curvature must be > 0, got {max_curvature}")
        if max_straight_m is None:
            max_straight_m = min_straight_m + 40.0
        check_step = min(2.5, max(0.5, min_clearance_m / 8.0))
        adjacent_m = 2.0 * min_clearance_m

        segs: list[Segment] = []
        pts = np.zeros((0, 2))  # coarse points of the accepted route, for the clearance check
        pts_s = np.zeros(0)
        total = 0.0
        heading = 0.0  # relative to start_heading
        end_xy = np.array(start_xy, dtype=float)
        end_h = float(start_heading)
        tries = 0
        while total < length_m - 1e-9:
            chunk = _draw_chunk(
                rng, total, length_m, heading, straight_m=(min_straight_m, max_straight_m), transition_m=transition_m,
                turn_rad=turn_rad, max_heading_rad=max_heading_rad, min_curvature_frac=min_curvature_frac,
                max_curvature=max_curvature,
            )
            cut = _cut(chunk, length_m - total)
            chunk_len = sum(sg.length_m for sg in cut)
            # clearance check of the chunk against the earlier route
            n_c = max(2, int(math.ceil(chunk_len / check_step)) + 1)
            cs = np.linspace(0.0, chunk_len, n_c)
            cxy, ch, _ = _integrate(cut, end_xy, end_h, cs)
            if not _clear(cxy, total + cs, pts, pts_s, adjacent_m, min_clearance_m):
                tries += 1
                if tries > max_tries:
                    raise RuntimeError(
                        f"Route.generate: no clear route after {max_tries} redraws; "
                        f"relax min_clearance_m/max_heading_rad or raise max_curvature"
                    )
                continue
            segs.extend(cut)
            pts = np.concatenate([pts, cxy[:-1]])
            pts_s = np.concatenate([pts_s, total + cs[:-1]])
            end_xy = cxy[-1]
            end_h = float(ch[-1])
            heading += sum(sg.heading_change for sg in cut)
            total += chunk_len
        return cls(segs, start_xy=start_xy, start_heading=start_heading, resolution_m=resolution_m)

    # -- queries ---------------------------------------------------------------------------------
    def curvature_at(self, s: float) -> float:
        """Exact curvature (1/m) at arc length ``s`` (m); 0 beyond the ends (straight extension)."""
        if s < 0.0 or s > self.length_m:
            return 0.0
        i = bisect_right(self._seg_s0, s) - 1
        sg = self.segments[i]
        return sg.curvature_start + sg.curvature_rate * (s - self._seg_s0[i])

    def pose_at(self, s: float, d: float = 0.0) -> tuple[float, float, float]:
        """World pose of the point at arc length ``s`` (m) and lateral offset ``d`` (m, + left).

        Returns (x m, y m, yaw rad wrapped to [-pi, pi)), yaw being the reference line's heading.
        Beyond the ends the line continues straight along the end tangent.
        """
        S, n = self._S, self._n
        if s <= 0.0:
            j, ds, k = 0, s, 0.0
        elif s >= self.length_m:
            j, ds, k = n - 1, s - S[n - 1], 0.0
        else:
            j = int(s * self._inv_res)
            if j > n - 2:
                j = n - 2
            while S[j] > s and j > 0:
                j -= 1
            while S[j + 1] < s:
                j += 1
            ds = s - S[j]
            k = self._KM[j]
        c, sn = self._C[j], self._Sn[j]
        if k == 0.0:
            lx, ly, h = ds, 0.0, self._H[j]
        else:
            a = k * ds
            lx = math.sin(a) / k
            ly = (1.0 - math.cos(a)) / k
            h = self._H[j] + a
        x = self._X[j] + lx * c - ly * sn
        y = self._Y[j] + lx * sn + ly * c
        if d != 0.0:
            x -= d * math.sin(h)
            y += d * math.cos(h)
        return x, y, (h + _PI) % _TAU - _PI

    def poses_at(self, s: np.ndarray, d: float | np.ndarray = 0.0) -> np.ndarray:
        """Vectorised :meth:`pose_at`: ``s`` (M,) m, ``d`` scalar or (M,) m -> (M, 3) [x, y, yaw].

        The yaw column is continuous (not wrapped).
        """
        s = np.asarray(s, dtype=float)
        n = self._n
        j = np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, n - 2)
        ds = s - self.s[j]
        km = np.asarray(self._KM)[j]
        before, after = s < 0.0, s > self.length_m
        j = np.where(after, n - 1, np.where(before, 0, j))
        ds = np.where(after, s - self.length_m, np.where(before, s, ds))
        km = np.where(before | after, 0.0, km)
        a = km * ds
        small = np.abs(km) < _K_EPS
        safe_k = np.where(small, 1.0, km)
        lx = np.where(small, ds, np.sin(a) / safe_k)
        ly = np.where(small, 0.0, (1.0 - np.cos(a)) / safe_k)
        h0 = self.heading[j]
        c, sn = np.cos(h0), np.sin(h0)
        h = h0 + a
        d = np.asarray(d, dtype=float)
        x = self.xy[j, 0] + lx * c - ly * sn - d * np.sin(h)
        y = self.xy[j, 1] + lx * sn + ly * c + d * np.cos(h)
        return np.stack([x, y, h], axis=-1)

    def _nearest_global(self, x: float, y: float) -> int:
        dx = self._xs_np - x
        dy = self._ys_np - y
        return int(np.argmin(dx * dx + dy * dy))

    def project(self, x: float, y: float, yaw: float, s_hint: float | None = None) -> tuple[float, float, float]:  # long: hot path
        """Frenet projection of a world pose onto the reference line.

        Args:
            x, y: world position, m.
            yaw: world heading, rad.
            s_hint: an arc length (m) near the answer, e.g. the previous step's s. With it the
                search walks from the hint (a few microseconds); without it every sample is checked.

        Returns:
            (s m, d m (+ left), heading error rad = yaw - line heading, wrapped to [-pi, pi)).
            Before the start / past the end, s < 0 / s > length_m along the end tangents.
        """
        X, Y = self._X, self._Y
        n = self._n
        if s_hint is None:
            i = self._nearest_global(x, y)
        else:
            i = int(s_hint * self._inv_res)
            if i < 0:
                i = 0
            elif i > n - 1:
                i = n - 1
            dx = X[i] - x
            dy = Y[i] - y
            best = dx * dx + dy * dy
            moved = False
            while i + 1 < n:
                dx = X[i + 1] - x
                dy = Y[i + 1] - y
                d2 = dx * dx + dy * dy
                if d2 >= best:
                    break
                best = d2
                i += 1
                moved = True
            if not moved:
                while i > 0:
                    dx = X[i - 1] - x
                    dy = Y[i - 1] - y
                    d2 = dx * dx + dy * dy
                    if d2 >= best:
                        break
                    best = d2
                    i -= 1
            if best > _LOCAL_SEARCH_MAX_DIST_M * _LOCAL_SEARCH_MAX_DIST_M and n > 2:
                i = self._nearest_global(x, y)
        px = x - X[i]
        py = y - Y[i]
        c, sn = self._C[i], self._Sn[i]
        along = px * c + py * sn
        k = 0.0
        if along >= 0.0:
            if i == n - 1:  # past the end: straight extension
                return (
                    self._S[i] + along,
                    py * c - px * sn,
                    (yaw - self._H[i] + _PI) % _TAU - _PI,
                )
            j = i
        else:
            if i == 0:  # before the start: straight extension
                return along, py * c - px * sn, (yaw - self._H[0] + _PI) % _TAU - _PI
            j = i - 1
            px = x - X[j]
            py = y - Y[j]
            c, sn = self._C[j], self._Sn[j]
            along = px * c + py * sn
        lat = py * c - px * sn
        k = self._KM[j]
        if k == 0.0:
            ds, d, h = along, lat, self._H[j]
        else:
            r = 1.0 / k
            vy = lat - r  # local frame: the centre of the interval's arc is at (0, r)
            phi = math.atan2(r * along, -r * vy)
            ds = phi * r
            rho = math.sqrt(along * along + vy * vy)
            d = r - rho if r > 0.0 else r + rho
            h = self._H[j] + phi  # k * ds
        return self._S[j] + ds, d, (yaw - h + _PI) % _TAU - _PI


# ---------------------------------------------------------------------------------------------
# cross-section: lanes, shoulder, edge
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoadLayout:
    """Cross-section of a road built around a :class:`Route` (the route is the road's centre line).

    Attributes:
        n_lanes: number of lanes (1..3), all in the direction of travel; lane 0 is the rightmost.
        lane_width_m: width of each lane, m.
        shoulder_m: paved strip between the outer lane edge and the edge body, m.
        edge: "barrier" (``barrier_height_m`` tall) or "curb" (``curb_height_m`` tall); both are
            collision bodies.
        barrier_height_m, curb_height_m: edge-body heights, m.
        barrier_thickness_m: edge-body thickness (across the road), m.
        dashed_m: (dash length, gap) of lane separators, m; the outer edge lines are solid.
        marking_width_m: width of painted lines, m.
    """

    n_lanes: int = 2
    lane_width_m: float = 3.5
    shoulder_m: float = 0.5
    edge: str = "barrier"
    barrier_height_m: float = 0.8
    barrier_thickness_m: float = 0.4
    dashed_m: tuple[float, float] = (3.0, 6.0)
    marking_width_m: float = 0.15
    curb_height_m: float = 0.15

    def __post_init__(self) -> None:
        if not 1 <= self.n_lanes <= 3:
            raise ValueError(f"n_lanes must be 1..3, got {self.n_lanes}")
        if self.edge not in ("barrier", "curb"):
            raise ValueError(f"edge must be 'barrier' or 'curb', got {self.edge!r}")
        if self.lane_width_m <= 0 or self.shoulder_m < 0 or self.barrier_thickness_m <= 0:
            raise ValueError("lane_width_m and barrier_thickness_m must be > 0, shoulder_m >= 0")
        if self.dashed_m[0] <= 0 or self.dashed_m[1] < 0:
            raise ValueError(f"dashed_m must be (dash > 0, gap >= 0), got {self.dashed_m}")

    @property
    def half_width_m(self) -> float:
        """Half the width of the lanes (outer lane edge to the centre line), m."""
        return 0.5 * self.n_lanes * self.lane_width_m

    @property
    def edge_offset_m(self) -> float:
        """|d| of the edge body's inner face (lanes + shoulder), m."""
        return self.half_width_m + self.shoulder_m

    @property
    def edge_height_m(self) -> float:
        """Height of the edge body, m (barrier or curb)."""
        return self.barrier_height_m if self.edge == "barrier" else self.curb_height_m

    def lane_center_offset(self, lane: int) -> float:
        """Lateral offset d (m, + left) of lane ``lane``'s centre from the centre line (lane 0 = rightmost)."""
        if not 0 <= lane < self.n_lanes:
            raise ValueError(f"lane must be in 0..{self.n_lanes - 1}, got {lane}")
        return -self.half_width_m + (lane + 0.5) * self.lane_width_m

    def lane_at(self, d: float) -> int:
        """Index of the lane containing lateral offset ``d`` (m), clamped to 0..n_lanes-1."""
        i = int(math.floor((d + self.half_width_m) / self.lane_width_m))
        return min(max(i, 0), self.n_lanes - 1)
