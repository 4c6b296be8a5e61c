"""Per-episode metrics and outcome classification, per task family: the one home of metric names.

Used alike by evaluation (:mod:`kai_drive.evaluation`: from a trajectory's step infos), training
(:class:`kai_drive.training.envs.EpisodeMetrics`: running tallies, TensorBoard, ``final_eval.json``) and
the scripted experts (:mod:`kai_drive.experts`). A task family (``kai_drive.catalog.task_family(env)``:
"driving" or "grasp") is described by a :class:`TaskFamily` in :data:`FAMILIES`; code dispatches on that
description (``family_of(env).episode_metrics`` ...), never on an env id.

Evaluation metrics (step infos -> flat dict of floats, NaN where undefined; :mod:`kai_drive.stats`
aggregates them). :func:`driving_metrics` and :func:`grasp_metrics` take the list of step ``info`` dicts
of one episode and the control period ``dt`` (s). Definitions (units SI):

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

Outcomes (:func:`episode_outcome`): ``success`` / ``collision:<kind>`` / ``off_road`` / ``lane_invasion``
/ ``timeout`` (the env truncated the episode) / ``horizon`` (an evaluator's step limit) / ``done`` /
``running``; :func:`is_failure` is the infraction subset (collision, off-road, terminal lane invasion).

Training tallies (:class:`DrivingTally`, :class:`GraspTally`) give ``info["episode_metrics"]`` at the end
of a training / periodic-evaluation episode: ``return``, ``length``, ``road_seed``, ``truncated`` and the
family's metrics under the evaluation's names (driving: ``mean_speed_mps``, ``route_completion``, ...;
grasp: the keys of :func:`grasp_metrics`). :func:`summarize_episodes` aggregates them for
``final_eval.json`` / ``evaluations.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DrivingMetricConfig", "driving_metrics", "grasp_metrics", "savgol_derivative", "STATIC_KINDS",
           "episode_outcome", "is_failure", "DrivingTally", "GraspTally", "summarize_episodes", "summary_line",
           "final_summary_line", "final_eval_aliases",
           "TaskFamily", "FAMILIES", "family_of"]

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


def _collision_metrics(infos: Sequence[dict[str, Any]], cfg: DrivingMetricConfig) -> dict[str, float]:
    """Collision events by kind (rising edges of the collision flag, kind of the first contact), off-road
    and lane-invasion events, and the CARLA infraction penalty factor."""
    out: dict[str, float] = {}
    last = infos[-1]
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
    return out


def _comfort_metrics(v: np.ndarray, yaw: np.ndarray, dt: float, cfg: DrivingMetricConfig) -> dict[str, float]:
    """nuPlan comfort: Savitzky-Golay acceleration and jerk of the speed, lateral acceleration, yaw rate."""
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
    return {
        "min_lon_accel_mps2": float(acc.min()),
        "max_lon_accel_mps2": float(acc.max()),
        "max_abs_lat_accel_mps2": float(np.abs(lat).max()),
        "max_abs_jerk_mps3": float(np.abs(jerk).max()),
        "max_abs_yaw_rate_radps": float(np.abs(yaw).max()),
        "comfort_frac": float(ok.mean()),
        "comfortable": float(ok.all()),
    }


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
    out.update(_collision_metrics(infos, cfg))
    out["driving_score"] = out["route_completion"] * out["infraction_penalty"]

    # time to collision / headway
    ttc = get("ttc_s", math.inf)
    out["min_ttc_s"] = float(min(np.min(ttc), cfg.ttc_cap_s)) if len(ttc) else math.nan
    out["ttc_exposed_s"] = float(np.sum(ttc < cfg.ttc_threshold_s) * dt)
    out["ttc_exposed_frac"] = float(np.mean(ttc < cfg.ttc_threshold_s))
    hw = get("headway_s", math.inf)
    fin = hw[np.isfinite(hw) & (hw < cfg.headway_cap_s)]
    out["mean_headway_s"] = float(fin.mean()) if len(fin) else math.nan
    out["min_headway_s"] = float(fin.min()) if len(fin) else math.nan

    v = get("speed_mps", 0.0)
    out.update(_comfort_metrics(v, get("yaw_rate_radps", 0.0), dt, cfg))
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


# ---------------------------------------------------------------------------------------------------
# Outcomes: why an episode ended (one vocabulary for evaluation, causal attribution and training)
# ---------------------------------------------------------------------------------------------------
#: outcomes that are infractions (``collision:<kind>`` counts too): what but-for attribution explains
FAILURES = ("off_road", "lane_invasion")


def episode_outcome(last: dict[str, Any], terminated: bool, truncated: bool, horizon_cut: bool = False) -> str:
    """``success`` / ``collision:<kind>`` / ``off_road`` / ``lane_invasion`` / ``timeout`` / ``horizon`` /
    ``done`` / ``running`` from the episode's last step info and how it ended (``horizon_cut``: stopped by an
    evaluator's step limit, not by the env)."""
    if last.get("is_success"):
        return "success"
    if last.get("collision"):
        return f"collision:{last.get('collision_with') or 'static'}"
    if last.get("off_road"):
        return "off_road"
    if last.get("lane_invasion") and terminated:
        return "lane_invasion"
    if horizon_cut:
        return "horizon"
    return "timeout" if truncated else ("done" if terminated else "running")


def is_failure(outcome: str) -> bool:
    """An infraction outcome: a collision, off the road, or a lane invasion that ended the episode."""
    return outcome.startswith("collision") or outcome in FAILURES


# ---------------------------------------------------------------------------------------------------
# Training tallies: running per-episode metrics inside the training env stack (no step list kept for
# driving: the wrapper runs at every training step)
# ---------------------------------------------------------------------------------------------------
class DrivingTally:
    """Running driving metrics of one episode: ``step(reward, info)`` every step, ``finish(...)`` at the end.

    Keys (besides ``return``, ``length``, ``road_seed``, ``truncated``, ``outcome``): ``success`` (strict),
    ``route_completion``, ``collision`` and ``off_road`` (any step), ``lane_invasions`` (the env's count),
    ``lane_offset_rms_m``, ``lane_offset_abs_mean_m``, ``lane_offset_abs_max_m``, ``mean_speed_mps``,
    ``cost`` (sum of the per-step safety cost)."""

    def __init__(self) -> None:
        self.ret = 0.0
        self.n = 0
        self._off2 = 0.0
        self._offabs = 0.0
        self._offmax = 0.0
        self._speed = 0.0
        self._cost = 0.0
        self._collision = False
        self._off_road = False

    def step(self, reward: float, info: dict[str, Any]) -> None:
        off = float(info.get("lateral_offset_m", 0.0))
        self.ret += float(reward)
        self.n += 1
        self._off2 += off * off
        self._offabs += abs(off)
        self._offmax = max(self._offmax, abs(off))
        self._speed += float(info.get("speed_mps", 0.0))
        self._cost += float(info.get("cost", 0.0))
        self._collision |= bool(info.get("collision", False))
        self._off_road |= bool(info.get("off_road", False))

    def finish(self, info: dict[str, Any], terminated: bool, truncated: bool, road_seed: int) -> dict[str, Any]:
        n = max(self.n, 1)
        return {
            "return": self.ret,
            "length": self.n,
            "success": float(bool(info.get("is_success", False))),
            "route_completion": float(info.get("route_completion", 0.0)),
            "collision": float(self._collision),
            "off_road": float(self._off_road),
            "lane_invasions": int(info.get("lane_invasions", 0)),
            "lane_offset_rms_m": math.sqrt(self._off2 / n),
            "lane_offset_abs_mean_m": self._offabs / n,
            "lane_offset_abs_max_m": self._offmax,
            "mean_speed_mps": self._speed / n,
            "cost": self._cost,
            "road_seed": road_seed,
            "truncated": bool(truncated and not terminated),
            "outcome": episode_outcome(info, terminated, truncated),
        }


class GraspTally:
    """Running grasp metrics of one episode: the keys of :func:`grasp_metrics` (computed by it at the end
    from the few info keys it reads) and ``return``, ``length``, ``road_seed``, ``truncated``, ``outcome``."""

    _KEYS = ("grasped", "is_success", "table_contacts", "peak_contact_force_n", "objects_out", "joint_limit_hits",
             "max_lift_m", "cost")

    def __init__(self) -> None:
        self.ret = 0.0
        self.n = 0
        self._infos: list[dict[str, Any]] = []

    def step(self, reward: float, info: dict[str, Any]) -> None:
        self.ret += float(reward)
        self.n += 1
        self._infos.append({k: info[k] for k in self._KEYS if k in info})

    def finish(self, info: dict[str, Any], terminated: bool, truncated: bool, road_seed: int) -> dict[str, Any]:
        out: dict[str, Any] = {"return": self.ret, "length": self.n}
        m = grasp_metrics(self._infos or [{}], 0.0)
        out.update({k: v for k, v in m.items() if k not in ("steps", "duration_s")})
        out.update({"road_seed": road_seed, "truncated": bool(truncated and not terminated),
                    "outcome": episode_outcome(info, terminated, truncated)})
        return out


# ---------------------------------------------------------------------------------------------------
# Summary of training-side episodes (final_eval.json, evaluations.json)
# ---------------------------------------------------------------------------------------------------
def _column(episodes: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.asarray([float(e.get(key, 0.0)) for e in episodes], dtype=np.float64)


def _driving_summary(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    col = lambda k: _column(episodes, k)  # noqa: E731
    return {
        "route_completion_mean": float(col("route_completion").mean()),
        "collision_rate": float(col("collision").mean()),
        "collisions": int(col("collision").sum()),
        "off_road_rate": float(col("off_road").mean()),
        "off_roads": int(col("off_road").sum()),
        "lane_invasion_rate": float((col("lane_invasions") > 0).mean()),
        "lane_invasions": int(col("lane_invasions").sum()),
        "lane_offset_rms_m": float(np.sqrt((col("lane_offset_rms_m") ** 2).mean())),
        "lane_offset_abs_mean_m": float(col("lane_offset_abs_mean_m").mean()),
        "lane_offset_abs_max_m": float(col("lane_offset_abs_max_m").max()),
        "mean_speed_mps": float(col("mean_speed_mps").mean()),
    }


#: grasp metrics summarised as ``<key>_mean`` (and ``peak_contact_force_n_max``)
GRASP_MEANS = ("drops", "table_contacts", "peak_contact_force_n", "objects_out", "joint_limit_hits", "max_lift_m")


def _grasp_summary(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {f"{k}_mean": float(_column(episodes, k).mean()) for k in GRASP_MEANS}
    out["drop_rate"] = float((_column(episodes, "drops") > 0).mean())
    out["peak_contact_force_n_max"] = float(_column(episodes, "peak_contact_force_n").max())
    return out


def summarize_episodes(episodes: list[dict[str, Any]], family: "TaskFamily | str" = "driving") -> dict[str, Any]:
    """Aggregate training-side per-episode metrics: success rate with its Wilson 95 % interval, return and
    length, the family's own rates and means, ``safety_cost_mean`` and ``timeout_rate``."""
    from kai_drive.stats import wilson_interval

    fam = FAMILIES[family] if isinstance(family, str) else family
    n = len(episodes)
    if n == 0:
        return {"episodes": 0}
    successes = int(_column(episodes, "success").sum())
    lo, hi = wilson_interval(successes, n)
    ret = _column(episodes, "return")
    return {
        "episodes": n,
        "successes": successes,
        "success_rate": successes / n,
        "success_rate_ci95": [lo, hi],
        "mean_return": float(ret.mean()),
        "std_return": float(ret.std()),
        "mean_length": float(_column(episodes, "length").mean()),
        **fam.summary(episodes),
        "safety_cost_mean": float(_column(episodes, "cost").mean()),
        "timeout_rate": float(_column(episodes, "truncated").mean()),
    }


def summary_line(res: dict[str, Any], family: "TaskFamily | str" = "driving") -> str:
    """The family's headline numbers of a :func:`summarize_episodes` result, for a printed line
    (``route 93 %, return 41.2, |offset| 0.31 m`` / ``drops 0.10, peak force 35 N, return 12.0``)."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    return fam.headline(res)


def final_summary_line(res: dict[str, Any], family: "TaskFamily | str" = "driving") -> str:
    """The family's numbers of a held-out final evaluation, for the printed line after training
    (driving: route, collisions, off-road, lane invasions, offsets; grasp: drops, contact force, objects out)."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    return fam.final_headline(res)


def final_eval_aliases(res: dict[str, Any], family: "TaskFamily | str" = "driving") -> dict[str, Any]:
    """Extra ``final_eval.json`` keys a family has always written under a second name
    (driving: ``lateral_offset_abs_mean_m`` / ``_max_m`` = ``lane_offset_abs_*``); none for grasp."""
    fam = FAMILIES[family] if isinstance(family, str) else family
    return {alias: res[key] for alias, key in fam.final_aliases.items()}


def _driving_final_headline(res: dict[str, Any]) -> str:
    return (f"route {100 * res['route_completion_mean']:.1f} %, collisions {res['collisions']}, off-road "
            f"{res['off_roads']}, lane invasions {res['lane_invasions']}, |offset| mean "
            f"{res['lane_offset_abs_mean_m']:.2f} m max {res['lane_offset_abs_max_m']:.2f} m")


def _grasp_final_headline(res: dict[str, Any]) -> str:
    return (f"drops {res['drops_mean']:.2f} per episode, peak contact force {res['peak_contact_force_n_mean']:.0f} N "
            f"(max {res['peak_contact_force_n_max']:.0f} N), objects out {res['objects_out_mean']:.2f}")


def _driving_headline(res: dict[str, Any]) -> str:
    return (f"route {100 * res['route_completion_mean']:.0f} %, return {res['mean_return']:.1f}, "
            f"|offset| {res['lane_offset_abs_mean_m']:.2f} m")


def _grasp_headline(res: dict[str, Any]) -> str:
    return (f"drops {res['drops_mean']:.2f}, peak force {res['peak_contact_force_n_mean']:.0f} N, "
            f"return {res['mean_return']:.1f}")


def _driving_episode_line(m: dict[str, Any]) -> str:
    return (f"route {100 * m.get('route_completion', 0):.0f} %, steps {m.get('length', 0)}, |offset| max "
            f"{m.get('lane_offset_abs_max_m', 0):.2f} m" + (", collision" if m.get("collision") else "")
            + (", lane invasion" if m.get("lane_invasions") else ""))


def _grasp_episode_line(m: dict[str, Any]) -> str:
    return (f"steps {m.get('length', 0)}, drops {m.get('drops', 0):.0f}, peak force "
            f"{m.get('peak_contact_force_n', 0):.0f} N, lift {m.get('max_lift_m', 0):.2f} m"
            + (f", objects out {m.get('objects_out', 0):.0f}" if m.get("objects_out") else ""))


# ---------------------------------------------------------------------------------------------------
# Task families
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskFamily:
    """What the upper floors need to know about a task family (look one up with :func:`family_of`).

    ``episode_metrics(infos, dt, cfg)``: evaluation metrics of one episode; ``rate_keys``: its 0/1 metrics
    (aggregated as rates with a Wilson interval, the rest as mean / IQM); ``drop_metrics``: reported as
    paired drops under robustness conditions; ``score_key``: the metric a sensor's removal is judged by;
    ``per_km``: events per km are reported; ``scenario_factors``: the env's reset takes scenario options
    (scenario robustness conditions and causal interventions apply); ``tally``: the training-time running
    metrics; ``summary``: its part of :func:`summarize_episodes`; ``headline`` / ``final_headline``: its
    numbers in a periodic / final evaluation's printed line; ``episode_line``: one training-side episode's
(a :attr:`tally` result) in ``play``'s printed line; ``final_aliases``: second names in
    ``final_eval.json``; ``log_tags``: TensorBoard ``(name, episode value, summary key)`` logged under ``drive/`` (the
    mean of the episode value over recent training episodes) and ``eval/`` (the summary key of a periodic
    evaluation); an episode value is a key or a function of the episode dict."""

    name: str
    episode_metrics: Callable[..., dict[str, float]]
    rate_keys: tuple[str, ...]
    drop_metrics: tuple[str, ...]
    score_key: str
    per_km: bool
    scenario_factors: bool
    tally: Callable[[], Any]
    summary: Callable[[list[dict[str, Any]]], dict[str, Any]]
    headline: Callable[[dict[str, Any]], str]
    final_headline: Callable[[dict[str, Any]], str]
    episode_line: Callable[[dict[str, Any]], str]
    final_aliases: dict[str, str]
    log_tags: tuple[tuple[str, Any, str], ...]

    @property
    def causal_interventions(self) -> bool:
        """Whether scenario interventions (and but-for attribution of failures) apply."""
        return self.scenario_factors


FAMILIES: dict[str, TaskFamily] = {
    "driving": TaskFamily(
        name="driving",
        episode_metrics=driving_metrics,
        rate_keys=("success", "collision", "off_road", "comfortable", "within_budget"),
        drop_metrics=("driving_score", "route_completion", "success", "collision", "min_ttc_s", "comfort_frac"),
        score_key="driving_score",
        per_km=True,
        scenario_factors=True,
        tally=DrivingTally,
        summary=_driving_summary,
        headline=_driving_headline,
        final_headline=_driving_final_headline,
        episode_line=_driving_episode_line,
        final_aliases={"lateral_offset_abs_mean_m": "lane_offset_abs_mean_m",
                       "lateral_offset_abs_max_m": "lane_offset_abs_max_m"},
        log_tags=(
            ("success_rate", "success", "success_rate"),
            ("route_completion", "route_completion", "route_completion_mean"),
            ("collision_rate", "collision", "collision_rate"),
            ("off_road_rate", "off_road", "off_road_rate"),
            ("lane_offset_rms_m", "lane_offset_rms_m", "lane_offset_rms_m"),
            ("mean_speed_mps", "mean_speed_mps", "mean_speed_mps"),
            ("safety_cost", "cost", "safety_cost_mean"),
            ("lane_invasion_rate", lambda e: e.get("lane_invasions", 0) > 0, "lane_invasion_rate"),
        ),
    ),
    "grasp": TaskFamily(
        name="grasp",
        episode_metrics=grasp_metrics,
        rate_keys=("success",),
        drop_metrics=("success", "drops", "peak_contact_force_n", "objects_out"),
        score_key="success",
        per_km=False,
        scenario_factors=False,
        tally=GraspTally,
        summary=_grasp_summary,
        headline=_grasp_headline,
        final_headline=_grasp_final_headline,
        episode_line=_grasp_episode_line,
        final_aliases={},
        log_tags=(
            ("success_rate", "success", "success_rate"),
            ("drops", "drops", "drops_mean"),
            ("table_contacts", "table_contacts", "table_contacts_mean"),
            ("peak_contact_force_n", "peak_contact_force_n", "peak_contact_force_n_mean"),
            ("objects_out", "objects_out", "objects_out_mean"),
            ("max_lift_m", "max_lift_m", "max_lift_m_mean"),
            ("safety_cost", "cost", "safety_cost_mean"),
        ),
    ),
}


def family_of(env: Any) -> TaskFamily:
    """The :class:`TaskFamily` of an env: an alias or id (``kai_drive.catalog.task_family``), a family
    name ("driving" / "grasp"), or an env object (its task's ``family``)."""
    if isinstance(env, TaskFamily):
        return env
    if isinstance(env, str):
        if env in FAMILIES:
            return FAMILIES[env]
        from kai_drive.catalog import task_family

        return FAMILIES[task_family(env)]
    return FAMILIES[env.unwrapped.task.family]
