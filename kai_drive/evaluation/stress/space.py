"""The searched scenario space: the continuous factors an env's ``scenario:`` spec draws, and their
nominal distribution.

Every continuous factor of a kai-drive scenario is drawn uniformly from a ``[low, high]`` range
(:mod:`kai_drive.sim.scenario`, the task's ego start ranges). A :class:`Factor` is one such range and the
record path it sets. The search works in **latent standard-normal coordinates** ``z``:
``x = low + (high - low) * Phi(z)``, so ``z ~ N(0, I)`` gives exactly the env's own (uniform) nominal
distribution, every ``z`` maps inside the env's support (the search cannot invent impossible worlds), and
the plausibility of a record is the log-density of its latent point, :meth:`FactorSpace.log_likelihood`
(``log N(z; 0, I)``): highest at the median of every range, falling off towards the range ends. The uniform
density itself is flat inside the support, so it could not rank records; the latent density can.

Factors with a list behind them (pedestrians, obstacles, traffic, distractors) set the first item of the
list the seed's road draws (the one nearest the start for pedestrians), when it exists; other items stay as
drawn. The first pedestrian's side (a fair coin) is searched too, as a latent normal whose sign picks the side
(nominal: exactly 50/50). Other discrete factors (counts, lanes, other sides) and the road itself come from the
road seed, drawn from the nominal distribution for every episode.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["Factor", "FactorSpace", "factor_space"]

_N01 = NormalDist()
_U_EPS = 1e-9

#: scenario spec section -> (spec field, record path template, how the value is written)
#: ``{i}`` in a path means the first item of that list; ``s_ahead`` adds the ego's start arc length.
_SECTIONS: dict[str, list[tuple[str, str, str]]] = {
    "lead": [(k, f"lead.{k}", "value") for k in ("gap_m", "speed_mps", "speed_amplitude_mps", "speed_period_s",
                                                   "brake_at_s", "brake_decel_mps2", "brake_duration_s")],
    "pedestrians": [("s_ahead_m", "pedestrians.0.s_m", "s_ahead"), ("speed_mps", "pedestrians.0.speed_mps", "value"),
                    ("trigger_distance_m", "pedestrians.0.trigger_distance_m", "value")],
    "obstacles": [("s_ahead_m", "obstacles.0.s_m", "s_ahead"), ("size_m", "obstacles.0.size_m", "cube")],
    "traffic": [("speed_mps", "traffic.0.speed_mps", "speed_pair")],
    "distractors": [("distance_m", "distractors.0.distance_m", "value"), ("size_m", "distractors.0.size_m", "value")],
    "light": [(k, f"light.{k}", "value") for k in ("intensity", "ambient", "diffuse", "specular")],
    "sensor_noise": [(k, f"sensor_noise.{k}", "value") for k in ("camera_noise_std", "camera_dropout",
                                                                  "lidar_noise_std", "lidar_dropout", "state_noise_std")],
}


@dataclass(frozen=True)
class Factor:
    """One continuous factor: drawn uniformly from ``[low, high]`` (its unit is the record field's)."""

    name: str  # the record path it sets, e.g. "lead.brake_decel_mps2"
    low: float
    high: float
    mode: str = "value"  # value / s_ahead (+ ego start s) / cube (3 equal sizes) / speed_pair (speed and desired)
    #                      / side (a fair coin: x < 0 -> -1, right; x >= 0 -> +1, left)

    @property
    def discrete(self) -> bool:
        return self.mode == "side"

    def to_x(self, z: np.ndarray) -> np.ndarray:
        u = np.vectorize(_N01.cdf, otypes=[float])(np.asarray(z, float))
        return self.low + (self.high - self.low) * u

    def to_z(self, x: np.ndarray) -> np.ndarray:
        if self.discrete:  # a recorded side: the median of its half of the latent line
            return np.where(np.asarray(x, float) < 0, _N01.inv_cdf(0.25), _N01.inv_cdf(0.75))
        u = (np.asarray(x, float) - self.low) / (self.high - self.low)
        u = np.clip(u, _U_EPS, 1 - _U_EPS)
        return np.vectorize(_N01.inv_cdf, otypes=[float])(u)


def _range(v: Any) -> tuple[float, float] | None:
    if isinstance(v, (tuple, list)) and len(v) == 2 and not isinstance(v[0], (tuple, list)):
        lo, hi = float(v[0]), float(v[1])
        return (lo, hi) if hi > lo else None
    return None


def _list_present(spec: Any, section: str) -> bool:
    count = getattr(getattr(spec, section), "count", 1)
    return (max(count) if isinstance(count, (tuple, list)) else int(count)) > 0


def factor_space(env: Any, only: list[str] | None = None) -> "FactorSpace":  # long: one table walk per source
    """The continuous factors of ``env``'s scenario spec (and its task's ego start ranges). ``only``: keep
    the factors whose name contains one of these strings (e.g. ``["lead."]``). Raises ValueError when the
    env has no scenario factors or ``only`` keeps none."""
    u = env.unwrapped
    spec = getattr(u.spec_data, "scenario", None)
    task = u.spec_data.task
    if spec is None or not hasattr(task, "start_speed_mps"):
        raise ValueError(f"{u.spec_data.id}: no scenario factors to search (a driving env's scenario: section)")
    start_s = float(getattr(task, "start_s_m", 0.0))
    factors: list[Factor] = []
    for name, lo, hi in (("start_speed_mps", *task.start_speed_mps),
                         ("start_offset_m", -task.start_offset_m, task.start_offset_m),
                         ("start_heading_rad", -task.start_heading_rad, task.start_heading_rad)):
        if hi > lo:
            factors.append(Factor(name, float(lo), float(hi)))
    for section, rows in _SECTIONS.items():
        sec = getattr(spec, section)
        if section == "lead" and not sec.enabled:
            continue
        if section in ("pedestrians", "obstacles", "traffic", "distractors") and not _list_present(spec, section):
            continue
        for field, path, mode in rows:
            r = _range(getattr(sec, field))
            if r is None:
                continue
            lo, hi = r
            if mode == "s_ahead":
                lo, hi = lo + start_s, hi + start_s
            factors.append(Factor(path, lo, hi, mode))
        if section == "pedestrians":  # which side the first pedestrian starts from: drawn 50/50 (_draw_pedestrians)
            factors.append(Factor("pedestrians.0.side", -1.0, 1.0, "side"))
    if only:
        factors = [f for f in factors if any(o in f.name for o in only)]
    if not factors:
        what = f" matching {only}" if only else ""
        raise ValueError(f"{u.spec_data.id}: no continuous scenario factor{what} to search; the env's scenario: "
                         "section and task start ranges draw none (give ranges [low, high], e.g. --set "
                         "scenario.lead.brake_decel_mps2=[3,9])")
    return FactorSpace(factors)


class FactorSpace:
    """The searched factors; maps latent points ``z`` (shape ``[d]``) to record overrides and back."""

    def __init__(self, factors: list[Factor]) -> None:
        self.factors = list(factors)

    @property
    def dim(self) -> int:
        return len(self.factors)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.factors]

    def to_x(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, float)
        return np.stack([f.to_x(z[..., i]) for i, f in enumerate(self.factors)], axis=-1)

    def to_z(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        return np.stack([f.to_z(x[..., i]) for i, f in enumerate(self.factors)], axis=-1)

    def quantiles(self, z: np.ndarray) -> np.ndarray:
        """``Phi(z)`` per factor; a side factor's quantile is 0.25 or 0.75 (which half), so two worlds that
        differ only in the latent value of the same side are the same world."""
        u = np.vectorize(_N01.cdf, otypes=[float])(np.asarray(z, float))
        for i, f in enumerate(self.factors):
            if f.discrete:
                u[..., i] = np.where(u[..., i] < 0.5, 0.25, 0.75)
        return u

    @staticmethod
    def log_likelihood(z: np.ndarray) -> np.ndarray:
        """``log N(z; 0, I)`` per point (the plausibility; nats). Shape ``[..., d] -> [...]``."""
        z = np.asarray(z, float)
        return -0.5 * np.sum(z * z, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)

    def record_log_likelihood(self, record: dict) -> float:
        """The plausibility of a full scenario record: its searched factors' latent log-density."""
        return float(self.log_likelihood(self.to_z(self.read(record))))

    def read(self, record: dict) -> np.ndarray:
        """The factor values of a record (NaN where the record lacks the item, e.g. no pedestrian)."""
        out = []
        for f in self.factors:
            v = _get(record, f.name)
            if isinstance(v, (list, tuple)):
                v = v[0]
            out.append(math.nan if v is None else float(v))
        return np.asarray(out)

    def needs_record(self) -> bool:
        """Whether applying a point needs the realised record (a factor sets an item of a list)."""
        return any(".0." in f.name for f in self.factors)

    def apply(self, x: np.ndarray, record: dict | None = None) -> dict:
        """Scenario overrides that set the factors to ``x``: with ``record`` (the seed's realised record) a full
        record; without, a nested partial one (dict paths only; ``reset`` merges nested dicts)."""
        out: dict = copy.deepcopy(record) if record is not None else {}
        for f, v in zip(self.factors, np.asarray(x, float)):
            v = float(v)
            if ".0." in f.name:
                head, _, rest = f.name.partition(".0.")
                items = out.get(head) or []
                if not items:
                    continue  # this road drew no such item: nothing to set
                item = items[0]
                if f.mode == "cube":
                    item[rest] = [v, v, v]
                elif f.mode == "side":
                    item["side"] = 1 if v >= 0 else -1
                elif f.mode == "speed_pair":
                    item["speed_mps"], item["desired_speed_mps"] = v, v
                else:
                    item[rest] = v
            else:
                _set(out, f.name, v)
        return out


def _get(rec: dict, path: str) -> Any:
    cur: Any = rec
    for k in path.split("."):
        if cur is None:
            return None
        cur = cur[int(k)] if isinstance(cur, list) else cur.get(k)
        if isinstance(cur, list) and not cur:
            return None
    return cur


def _set(rec: dict, path: str, value: Any) -> None:
    keys = path.split(".")
    cur = rec
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
