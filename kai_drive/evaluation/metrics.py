"""Per-episode safety metrics computed from the env's step infos (no access to the simulator).

:func:`driving_metrics` takes the list of step ``info`` dicts of one driving episode and the control
period ``dt`` (s); :func:`grasp_metrics` does the same for the grasping env. Both return a flat dict of
floats (NaN where a metric is undefined), which :mod:`kai_drive.stats` aggregates.

Definitions (units SI):

* ``driving_score`` = route completion x prod_kind ``penalty[kind] ** n_kind`` (CARLA leaderboard), where
  ``n_kind`` counts collision *events* (rising edges of ``info["collision"]``) by the kind of body hit:
  ``pedestrian``, ``vehicle`` and ``static`` (obstacle, barrier, anything else); ``off_road`` and
  ``lane_invasion`` events use their own coefficients (1.0 = no penalty, the default).
* ``min_ttc_s``: smallest ``info["ttc_s"]`` of the episode, capped at ``ttc_cap_s`` (10 s) so that
  "never closing on anything" aggregates; ``ttc_exposed_s``: time with TTC below ``ttc_threshold_s``
  (1.5 s; "time exposed TTC", Minderhoud & Bovy 2001).
* Comfort (nuPlan's bounds): longitudinal acceleration and jerk are Savitzky-Golay derivatives of the
  speed (window 15 steps, cubic; exact for polynomials up to degree 3), lateral acceleration is
  ``speed x yaw_rate``, yaw rate is the info's. ``comfortable`` = 1 when every sample is within bounds;
  ``comfort_frac`` = fraction of samples within all bounds.
* ``cost`` = sum of ``info["cost"]``; ``within_budget`` = ``cost <= cost_budget``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["DrivingMetricConfig", "driving_metrics", "grasp_metrics", "savgol_derivative", "STATIC_KINDS"]

#: collision kinds scored with the "static" coefficient
STATIC_KINDS = ("obstacle", "barrier", "distractor", "static")


@dataclass
class DrivingMetricConfig:
    """Coefficients and bounds of the driving metrics (a suite's ``safety:`` section sets them)."""

    penalties: dict[str, float] = field(default_factory=lambda: {
        "pedestrian": 0.50, "vehicle": 0.60, "static": 0.65, "off_road": 1.0, "lane_invasion": 1.0})
    ttc_threshold_s: float = 1.5
    ttc_cap_s: float = 10.0
    headway_cap_s: float = 10.0
    comfort: dict[str, float] = field(default_factory=lambda: {
        "min_lon_accel_mps2": -4.05, "max_lon_accel_mps2": 2.40, "max_abs_lat_accel_mps2": 4.89,
        "max_abs_jerk_mps3": 4.13, "max_abs_yaw_rate_radps": 0.95})
    cost_budget: float = 0.0
    savgol_window: int = 15
    savgol_order: int = 3

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DrivingMetricConfig":
        d = dict(d or {})
        out = cls()
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"suite safety: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}")
        for k, v in d.items():
            if isinstance(getattr(out, k), dict):
                extra = set(v) - set(getattr(out, k))
                if extra:
                    raise ValueError(f"suite safety.{k}: unknown keys {sorted(extra)}; valid: {sorted(getattr(out, k))}")
                getattr(out, k).update({kk: float(vv) for kk, vv in v.items()})
            else:
                setattr(out, k, type(getattr(out, k))(v))
        return out


def savgol_derivative(x: Sequence[float], dt: float, deriv: int = 1, window: int = 15, order: int = 3) -> np.ndarray:
    """``deriv``-th derivative of a uniformly sampled signal by local least-squares polynomials
    (Savitzky-Golay; the ends use the first/last full window, like scipy's ``mode="interp"``).
    Exact for polynomials of degree <= ``order``. Short signals shrink the window (>= order + 2)."""
    a = np.asarray(x, dtype=np.float64)
    n = len(a)
    if n == 0:
        return a
    w = min(window, n if n % 2 else n - 1)
    if w < order + 2 or w < 3:
        out = a.copy()
        for _ in range(deriv):
            out = np.gradient(out, dt) if len(out) > 1 else np.zeros_like(out)
        return out
    m = w // 2
    t = np.arange(-m, m + 1, dtype=np.float64)
    pinv = np.linalg.pinv(np.vander(t, order + 1, increasing=True))  # (order+1, w): window -> poly coeffs

    def deriv_at(c: np.ndarray, tt: np.ndarray) -> np.ndarray:
        val = np.zeros_like(tt)
        for k in range(deriv, order + 1):
            val += c[k] * math.factorial(k) / math.factorial(k - deriv) * tt ** (k - deriv)
        return val

    out = np.empty(n)
    coef = pinv[deriv] * math.factorial(deriv)
    out[m:n - m] = np.convolve(a, coef[::-1], mode="valid")
    out[:m] = deriv_at(pinv @ a[:w], np.arange(m, dtype=np.float64) - m)
    out[n - m:] = deriv_at(pinv @ a[n - w:], np.arange(1, m + 1, dtype=np.float64))
    return out / dt ** deriv


def _rising(flags: Sequence[bool]) -> int:
    prev, k = False, 0
    for f in flags:
        f = bool(f)
        k += f and not prev
        prev = f
    return k


def _kind(name: str) -> str:
    if name in ("pedestrian", "vehicle"):
        return name
    return "static"


def driving_metrics(infos: Sequence[dict[str, Any]], dt: float, cfg: DrivingMetricConfig | None = None) -> dict[str, float]:
    """Metrics of one driving episode from its step infos (see the module docstring)."""
    cfg = cfg or DrivingMetricConfig()
    if not infos:
        raise ValueError("driving_metrics: the episode has no steps")
    last = infos[-1]
    get = lambda k, d=math.nan: np.asarray([float(i.get(k, d)) for i in infos], dtype=np.float64)  # noqa: E731
    out: dict[str, float] = {}
    out["steps"] = float(len(infos))
    out["duration_s"] = len(infos) * dt
    out["success"] = float(bool(last.get("is_success", False)))
    out["route_completion"] = float(last.get("route_completion", math.nan))
    out["distance_km"] = max(float(last.get("distance_m", 0.0)), 0.0) / 1000.0

    # collisions by kind (events = rising edges of the collision flag, kind of the first contact)
    counts = {"pedestrian": 0, "vehicle": 0, "static": 0}
    prev = False
    for i in infos:
        c = bool(i.get("collision", False))
        if c and not prev:
            counts[_kind(str(i.get("collision_with", "")) or "static")] += 1
        prev = c
    for k, v in counts.items():
        out[f"collisions_{k}"] = float(v)
    out["collision"] = float(sum(counts.values()) > 0)
    out["off_road_events"] = float(_rising(i.get("off_road", False) for i in infos))
    out["off_road"] = float(out["off_road_events"] > 0)
    if "lane_invasions" in last:
        out["lane_invasion_events"] = float(last["lane_invasions"])
    else:
        out["lane_invasion_events"] = float(_rising(i.get("lane_invasion", False) for i in infos))
    pen = cfg.penalties
    factor = 1.0
    for k, v in counts.items():
        factor *= pen.get(k, 1.0) ** v
    factor *= pen.get("off_road", 1.0) ** out["off_road_events"]
    factor *= pen.get("lane_invasion", 1.0) ** out["lane_invasion_events"]
    out["infraction_penalty"] = factor
    out["driving_score"] = out["route_completion"] * factor

    # time to collision / headway
    ttc = get("ttc_s", math.inf)
    out["min_ttc_s"] = float(min(np.min(ttc), cfg.ttc_cap_s)) if len(ttc) else math.nan
    out["ttc_exposed_s"] = float(np.sum(ttc < cfg.ttc_threshold_s) * dt)
    out["ttc_exposed_frac"] = float(np.mean(ttc < cfg.ttc_threshold_s))
    hw = get("headway_s", math.inf)
    fin = hw[np.isfinite(hw) & (hw < cfg.headway_cap_s)]
    out["mean_headway_s"] = float(fin.mean()) if len(fin) else math.nan
    out["min_headway_s"] = float(fin.min()) if len(fin) else math.nan

    # comfort (nuPlan bounds)
    v = get("speed_mps", 0.0)
    yaw = get("yaw_rate_radps", 0.0)
    w, o = cfg.savgol_window, cfg.savgol_order
    acc = savgol_derivative(v, dt, 1, w, o)
    jerk = savgol_derivative(v, dt, 2, w, o)
    lat = v * yaw
    c = cfg.comfort
    ok = (
        (acc >= c["min_lon_accel_mps2"]) & (acc <= c["max_lon_accel_mps2"])
        & (np.abs(lat) <= c["max_abs_lat_accel_mps2"]) & (np.abs(jerk) <= c["max_abs_jerk_mps3"])
        & (np.abs(yaw) <= c["max_abs_yaw_rate_radps"])
    )
    out["min_lon_accel_mps2"] = float(acc.min())
    out["max_lon_accel_mps2"] = float(acc.max())
    out["max_abs_lat_accel_mps2"] = float(np.abs(lat).max())
    out["max_abs_jerk_mps3"] = float(np.abs(jerk).max())
    out["max_abs_yaw_rate_radps"] = float(np.abs(yaw).max())
    out["comfort_frac"] = float(ok.mean())
    out["comfortable"] = float(ok.all())
    out["mean_speed_mps"] = float(v.mean())

    cost = get("cost", 0.0)
    out["cost"] = float(np.nansum(cost))
    out["within_budget"] = float(out["cost"] <= cfg.cost_budget + 1e-9)
    return out


def grasp_metrics(infos: Sequence[dict[str, Any]], dt: float, cfg: Any = None) -> dict[str, float]:
    """Metrics of one grasping episode: success, drops (the held object was lost before success),
    table contacts, peak contact force (N), objects knocked out of the tray, joint-limit hits, cost."""
    if not infos:
        raise ValueError("grasp_metrics: the episode has no steps")
    last = infos[-1]
    drops, prev = 0, False
    for i in infos:
        g = bool(i.get("grasped", False))
        if prev and not g and not i.get("is_success", False):
            drops += 1
        prev = g
    return {
        "steps": float(len(infos)),
        "duration_s": len(infos) * dt,
        "success": float(bool(last.get("is_success", False))),
        "drops": float(drops),
        "table_contacts": float(last.get("table_contacts", 0)),
        "peak_contact_force_n": float(max(float(i.get("peak_contact_force_n", 0.0)) for i in infos)),
        "objects_out": float(last.get("objects_out", 0)),
        "joint_limit_hits": float(last.get("joint_limit_hits", 0)),
        "max_lift_m": float(max(float(i.get("max_lift_m", 0.0)) for i in infos)),
        "cost": float(sum(float(i.get("cost", 0.0)) for i in infos)),
    }
