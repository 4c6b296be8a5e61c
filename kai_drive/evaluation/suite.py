"""Typed evaluation suites (``configs/eval/<name>.yaml``): every key validated before an episode runs.

:func:`load_suite` reads a suite by name, path or dict and validates it with the strict pydantic models
below (``extra="forbid"`` at every level, as env specs and training recipes). A misspelt key or a bad value
raises :class:`~kai_drive.specs.SpecError` (a ValueError; the CLI exits 2) whose message names the file and
the dotted key, e.g. ``configs/eval/quick.yaml: robustness.seedz: unknown key``. Thresholds are checked
too: their path must name a metric of the safety summary and their condition parse (``">= 0.8"``,
``"<=0.2"``). The validated suite is returned as a plain dict holding only the keys the file set; each
section's defaults are applied where it is consumed (``Suite.model_validate`` in kai_drive/evaluation/core.py). Keys:
docs/evaluation.md.
"""

from __future__ import annotations

import copy
import math
import operator
import re
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from kai_drive.metrics import FAMILIES
from kai_drive.config import SpecError, StrictModel, format_validation_error

__all__ = ["Suite", "load_suite", "validate_suite", "parse_condition", "task_metrics", "TASKS", "SpecError",
           "check_thresholds", "verdict", "thresholds_for"]

#: the task families a suite can scope thresholds, baselines and env defaults by
TASKS = tuple(FAMILIES)

_SUITE_KEYS_DOC = "docs/evaluation.md (Suites) and configs/eval/quick.yaml"



# -- safety -------------------------------------------------------------------------------------------
class Penalties(StrictModel):
    """CARLA driving-score coefficient per infraction kind (1.0 = no penalty)."""

    pedestrian: float = Field(0.50, ge=0, le=1)
    vehicle: float = Field(0.60, ge=0, le=1)
    static: float = Field(0.65, ge=0, le=1)
    off_road: float = Field(1.0, ge=0, le=1)
    lane_invasion: float = Field(1.0, ge=0, le=1)


class Comfort(StrictModel):
    """nuPlan comfort bounds."""

    min_lon_accel_mps2: float = -4.05
    max_lon_accel_mps2: float = 2.40
    max_abs_lat_accel_mps2: float = Field(4.89, gt=0)
    max_abs_jerk_mps3: float = Field(4.13, gt=0)
    max_abs_yaw_rate_radps: float = Field(0.95, gt=0)


class Safety(StrictModel):
    penalties: Penalties = Penalties()
    comfort: Comfort = Comfort()
    ttc_threshold_s: float = Field(1.5, gt=0)
    ttc_cap_s: float = Field(10.0, gt=0)
    headway_cap_s: float = Field(10.0, gt=0)
    cost_budget: float = Field(0.0, ge=0)
    savgol_window: int = Field(15, ge=5)
    savgol_order: int = Field(3, ge=1, le=5)


# -- robustness ---------------------------------------------------------------------------------------
SensorKey = Literal["camera", "depth", "lidar", "state"]
RemoveMode = Literal["black", "zero", "missing"]


class PerSensor(StrictModel):
    """A non-negative value per sensor: a Gaussian noise std (``transform.noise``) or an attack budget
    (``attack.eps``); camera/depth in 0..255 units, lidar 0..1, state raw."""

    camera: float = Field(0.0, ge=0)
    depth: float = Field(0.0, ge=0)
    lidar: float = Field(0.0, ge=0)
    state: float = Field(0.0, ge=0)


Noise = AttackEps = PerSensor


class Transform(StrictModel):
    camera: RemoveMode | None = None
    depth: RemoveMode | None = None
    lidar: RemoveMode | None = None
    state: RemoveMode | None = None
    noise: Noise | None = None


class Attack(StrictModel):
    method: Literal["fgsm", "pgd"] = "pgd"
    eps: AttackEps = AttackEps()
    steps: int = Field(3, ge=1)


class Condition(StrictModel):
    """One robustness condition: a scenario factor set through reset options, an observation transform
    and/or an adversarial attack; ``needs`` skips it for a policy without that sensor."""

    description: str = ""
    scenario: dict[str, Any] | None = None
    transform: Transform | None = None
    attack: Attack | None = None
    needs: SensorKey | None = None

    @model_validator(mode="after")
    def _something(self) -> "Condition":
        if self.scenario is None and self.transform is None and self.attack is None:
            raise ValueError("a condition needs `scenario`, `transform` or `attack`")
        return self


class Robustness(StrictModel):
    seeds: int = Field(10, ge=1)
    max_s: float = Field(20.0, gt=0)
    conditions: dict[str, Condition] = {}


# -- causal -------------------------------------------------------------------------------------------
class InterventionSpec(StrictModel):
    description: str = ""
    expect: Literal["respond", "ignore"] = "respond"
    requires: list[str] = []
    control: dict[str, Any] = {}
    treatment: dict[str, Any] = {}
    base: dict[str, Any] = {}


class ButFor(StrictModel):
    max_episodes: int = Field(3, ge=0)
    branch_s: float = Field(1.5, gt=0)
    post_s: float = Field(3.0, gt=0)


class Modality(StrictModel):
    max_obs: int = Field(200, ge=0)


class Causal(StrictModel):
    seeds: int = Field(10, ge=1)
    horizon_s: float = Field(10.0, gt=0)
    min_action_effect: float = Field(0.02, ge=0)
    interventions: dict[str, InterventionSpec] = {}
    but_for: ButFor = ButFor()
    modality: Modality = Modality()


# -- the rest -----------------------------------------------------------------------------------------
class Attribution(StrictModel):
    seeds: int = Field(3, ge=0)
    n_steps: int = Field(16, ge=1)


class Report(StrictModel):
    videos: int = Field(2, ge=0)
    frames_every: int = Field(3, ge=1)
    frame_size: tuple[int, int] = (128, 96)
    frames: int = Field(40, ge=1)


class Baselines(StrictModel):
    """Trivial policies run beside the evaluated one on the same safety seeds (kai_drive/evaluation/baselines.py);
    an empty list turns them off for that task."""

    driving: list[Literal["stop", "constant"]] = ["stop", "constant"]
    grasp: list[Literal["stop"]] = ["stop"]


class EnvDefaults(StrictModel):
    """Env config defaults per task (dotted keys, as ``--set``); the policy's own config (a run's test config)
    and the user's ``--set`` win over them."""

    driving: dict[str, Any] = {}
    grasp: dict[str, Any] = {}


class Suite(StrictModel):
    name: str | None = None
    description: str = ""
    seeds: int = Field(10, ge=1)
    seed_base: int = Field(2**30 + 2**29, ge=0)
    max_episode_s: float | None = Field(None, gt=0)
    env_config: EnvDefaults = EnvDefaults()
    safety: Safety = Safety()
    robustness: Robustness = Robustness()
    causal: Causal = Causal()
    attribution: Attribution = Attribution()
    report: Report = Report()
    baselines: Baselines = Baselines()
    thresholds: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _baselines_switch(cls, data: Any) -> Any:
        """``baselines: false`` turns every baseline off, ``true`` keeps the defaults."""
        if isinstance(data, dict) and isinstance(data.get("baselines"), bool):
            data = dict(data)
            if data["baselines"]:
                del data["baselines"]
            else:
                data["baselines"] = {t: [] for t in TASKS}
        return data


# -- thresholds ---------------------------------------------------------------------------------------
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_COND = re.compile(r"^\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
#: the numbers of a metric's summary a threshold can test
_STATS = ("mean", "iqm", "std", "min", "max", "n", "rate", "count", "per_km", "events", "km")


def parse_condition(cond: Any) -> tuple[str, float]:
    """``">= 0.8"`` / ``"<=0.2"`` -> ``(op, value)``; ValueError naming the form otherwise."""
    m = _COND.match(str(cond)) if isinstance(cond, str) else None
    if not m:
        raise ValueError(f"condition {cond!r}: write an operator ({', '.join(OPS)}) and a number, e.g. '>= 0.8' "
                         "or '<=0.2' (quoted in YAML)")
    val = float(m.group(2))
    if not math.isfinite(val):
        raise ValueError(f"condition {cond!r}: the number must be finite")
    return m.group(1), val


def task_metrics(task: str) -> set[str]:
    """The metric names of a task family's safety summary (``per_km`` included where the family has it)."""
    fam = FAMILIES[task]
    infos = [{"route_completion": 0.0, "distance_m": 0.0, "speed_mps": 0.0, "yaw_rate_radps": 0.0} for _ in range(3)]
    return set(fam.episode_metrics(infos, 0.05)) | ({"per_km"} if fam.per_km else set())


def _check_thresholds(th: dict, source: str) -> None:
    metrics = {t: task_metrics(t) for t in TASKS}

    def one(key: str, path: Any, cond: Any, known: set[str], scope: str) -> None:
        where = f"{source}: {key}"
        try:
            parse_condition(cond)
        except ValueError as exc:
            raise SpecError(f"{where}: {exc}") from None
        parts = str(path).split(".")
        if parts[0] != "safety" or len(parts) < 3:
            raise SpecError(f"{where}: a threshold path is safety.<metric>.<statistic> (the result's safety summary), "
                            "e.g. safety.collision.rate or safety.route_completion.mean")
        if parts[1] not in known:
            raise SpecError(f"{where}: unknown metric {parts[1]!r} for {scope}; known: {sorted(known)}")
        if parts[-1] not in _STATS:
            raise SpecError(f"{where}: unknown statistic {parts[-1]!r}; one of {list(_STATS)} (rates: rate, count, n)")

    for k, v in th.items():
        if k in TASKS:
            if not isinstance(v, dict):
                raise SpecError(f"{source}: thresholds.{k}: a mapping {{path: condition}} for {k} envs, "
                                f"got {type(v).__name__}")
            for p, c in v.items():
                one(f"thresholds.{k}.{p}", p, c, metrics[k], f"a {k} env")
        else:
            one(f"thresholds.{k}", k, v, metrics["driving"] | metrics["grasp"], "any env")


def check_thresholds(summary: dict, thresholds: dict) -> list[dict]:
    """``[{"path", "condition", "actual", "passed"}]``; a path missing from ``summary`` (or NaN) fails.
    Conditions are ``"<op> <number>"`` with or without spaces (``">= 0.8"``, ``"<=0.2"``)."""
    out = []
    for path, cond in (thresholds or {}).items():
        try:
            op, val = parse_condition(cond)
        except ValueError as exc:
            raise ValueError(f"threshold {path}: {exc}") from None
        cur: Any = summary
        for k in path.split("."):
            cur = cur.get(k) if isinstance(cur, dict) else None
        ok = (isinstance(cur, (int, float)) and not isinstance(cur, bool) and not math.isnan(float(cur))
              and OPS[op](float(cur), val))
        out.append({"path": path, "condition": cond, "actual": cur, "passed": bool(ok)})
    return out


def verdict(thresholds: list[dict]) -> bool | None:
    """``True`` every applicable threshold passes, ``False`` one fails, ``None`` none applies (nothing was
    checked: never "passed")."""
    checked = [t["passed"] for t in thresholds if t["passed"] is not None]
    return all(checked) if checked else None


def thresholds_for(thresholds: dict | None, task: str) -> tuple[dict, list[dict]]:
    """``(applicable, skipped)``: a suite's ``thresholds`` are flat (``{path: cond}``) and/or scoped by task
    family (``{driving: {path: cond}, grasp: {path: cond}}``). A flat ``safety.<metric>`` path whose metric
    only another family has is not applicable (reported, never failing); any other unknown path fails."""
    flat, skipped = {}, []
    mine = task_metrics(task)
    theirs = set().union(*(task_metrics(t) for t in TASKS if t != task))
    for k, v in (thresholds or {}).items():
        if k in TASKS and isinstance(v, dict):
            if k == task:
                flat.update(v)
            continue
        parts = str(k).split(".")
        if len(parts) > 1 and parts[0] == "safety" and parts[1] not in mine and parts[1] in theirs:
            skipped.append({"path": k, "condition": v, "actual": None, "passed": None,
                            "note": f"not applicable to a {task} env"})
        else:
            flat[k] = v
    return flat, skipped


# -- loading ------------------------------------------------------------------------------------------
def validate_suite(data: Any, source: str) -> dict:
    """Validate a suite mapping; returns it as a plain dict of the keys it set (defaults applied where consumed).
    Raises :class:`SpecError` naming ``source`` and the dotted key."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a suite is a mapping (see configs/eval/quick.yaml), got {type(data).__name__}")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(source, err, f"valid keys: {_SUITE_KEYS_DOC}")) from None
    _check_thresholds(suite.thresholds, source)
    out = suite.model_dump(exclude_unset=True)
    return copy.deepcopy(out)


def load_suite(suite: str | Path | dict) -> dict:
    """A suite by name (``quick``, ``full``: configs/eval/<name>.yaml), path, or dict, validated
    (:func:`validate_suite`); ``name`` defaults to the file's stem."""
    if isinstance(suite, dict):
        return validate_suite(copy.deepcopy(suite), "suite")
    p = Path(suite)
    if not p.suffix:
        from kai_drive.catalog import catalog_dir

        p = catalog_dir("configs") / "eval" / f"{suite}.yaml"
        if not p.exists():
            names = sorted(q.stem for q in p.parent.glob("*.yaml"))
            raise FileNotFoundError(f"unknown suite {suite!r}; known: {names} (configs/eval/) or a path to a YAML")
    if not p.exists():
        raise FileNotFoundError(f"--suite {p}: no such file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML: {exc}") from None
    out = validate_suite(data, str(p))
    out.setdefault("name", p.stem)
    return out
