"""Causal evaluation: the simulator intervenes on the world itself.

**Paired interventions** (:func:`run_interventions`). For every seed the realised scenario record is
read once (``info["scenario"]``), then two full records are built - *control* and *treatment*, which
differ only in the intervened factor - and replayed with ``reset(options={"scenario": record})``. The
scenario API draws every factor from its own random stream, so everything else (road, noise, other
actors) is identical in both arms. Per pair we measure

* actions: ``action_divergence`` = mean over the common steps of ``|a_T - a_C|_1`` (0 = the policy
  acted identically), ``braking_onset_s`` (first step with throttle/brake command < ``-brake_threshold``;
  the horizon when never), ``mean_throttle``, ``mean_abs_steer``;
* outcomes: ``collision``, ``failure``, ``min_ttc_s`` (capped), ``distance_m``.

The average treatment effect (ATE) of each is ``mean(treatment - control)`` over seeds with a paired
bootstrap 95 % CI. The policy *responds* to a factor when the CI of the action divergence lies above
``min_action_effect``; each intervention declares whether a sound driver should (``expect: respond``)
or should not (``expect: ignore``), and the verdict says which factors are watched and which wrongly.

**Modality reliance** (:func:`action_sensitivity`): at the states of the clean rollouts, the mean
``|pi(o) - pi(o without sensor k)|_1`` (what removing a sensor changes in the decision), reported next
to the sensor-removal outcome drop from the robustness section.

**But-for failure attribution** (:func:`but_for`): for each failed episode, the factual actions are
replayed up to ``branch_s`` before the failure; from there (a) a candidate world cause is removed (the
same reset with the cause taken out of the record; the forced history keeps the ego's path identical,
checked) or (b) ``restore_state`` puts the world back at the branch point and another driver takes
over (the scripted reference driver, or an emergency brake). A cause whose removal averts the failure
within ``post_s`` after the factual failure time is a but-for cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kai_drive import stats
from kai_drive.evaluation.rollout import Trajectory, apply_overrides, reset_options, rollout, scenario_context
from kai_drive.metrics import is_failure

__all__ = ["Intervention", "pair_metrics", "run_interventions", "action_sensitivity", "but_for", "ARM_METRICS"]

ARM_METRICS = ("braking_onset_s", "mean_throttle", "mean_abs_steer", "collision", "failure", "min_ttc_s", "distance_m")


@dataclass
class Intervention:
    """One factor change. ``control`` / ``treatment`` / ``base`` map dotted record paths to values
    (``base`` is applied to both arms); ``requires`` lists record keys that must be non-empty for the
    intervention to apply to an env (e.g. ``lead``)."""

    name: str
    control: dict = field(default_factory=dict)
    treatment: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    expect: str = "respond"
    requires: list = field(default_factory=list)
    description: str = ""

    @classmethod
    def from_dict(cls, name: str, d: dict) -> "Intervention":
        unknown = set(d) - {"control", "treatment", "base", "expect", "requires", "description"}
        if unknown:
            raise ValueError(f"suite causal.interventions.{name}: unknown keys {sorted(unknown)}")
        if d.get("expect", "respond") not in ("respond", "ignore"):
            raise ValueError(f"suite causal.interventions.{name}.expect must be 'respond' or 'ignore'")
        return cls(name=name, **{k: v for k, v in d.items()})

    def applies(self, record: dict) -> bool:
        return all(record.get(k) not in (None, [], {}) for k in self.requires)


def arm_metrics(traj: Trajectory, brake_threshold: float = 0.1, ttc_cap_s: float = 10.0) -> dict[str, float]:
    a = traj.actions_array()
    brake = np.nonzero(a[:, 1] < -brake_threshold)[0] if len(a) else np.array([])
    last = traj.infos[-1] if traj.infos else {}
    ttc = [float(i.get("ttc_s", math.inf)) for i in traj.infos]
    return {
        "braking_onset_s": float(brake[0] * traj.dt) if len(brake) else traj.steps * traj.dt,
        "mean_throttle": float(a[:, 1].mean()) if len(a) else math.nan,
        "mean_abs_steer": float(np.abs(a[:, 0]).mean()) if len(a) else math.nan,
        "collision": float(bool(last.get("collision"))),
        "failure": float(is_failure(traj.outcome)),
        "min_ttc_s": float(min(min(ttc, default=math.inf), ttc_cap_s)),
        "distance_m": float(last.get("distance_m", 0.0)),
    }


def pair_metrics(control: Trajectory, treatment: Trajectory, **kw: Any) -> dict[str, Any]:
    """Per-arm metrics plus the paired ``action_divergence`` of one seed."""
    ac, at = control.actions_array(), treatment.actions_array()
    n = min(len(ac), len(at))
    div = float(np.abs(at[:n] - ac[:n]).sum(axis=1).mean()) if n else 0.0
    return {"control": arm_metrics(control, **kw), "treatment": arm_metrics(treatment, **kw), "action_divergence": div}


def _verdict(expect: str, responds: bool) -> str:
    if expect == "respond":
        return "responds (as it should)" if responds else "does NOT respond (it should)"
    return "responds (it should NOT: spurious)" if responds else "ignores (as it should)"


def intervention_result(iv: Intervention, per_seed: list[dict], skipped: int, min_action_effect: float) -> dict:
    """Aggregate one intervention's paired seeds: paired effects on :data:`ARM_METRICS`, the action divergence,
    whether the policy responds (the divergence's CI lies above ``min_action_effect``) and the verdict."""
    res: dict[str, Any] = {"expect": iv.expect, "description": iv.description, "n": len(per_seed), "skipped": skipped}
    if not per_seed:
        res["note"] = f"not applicable to this env (needs {iv.requires})"
        return res
    effects = {k: stats.paired_difference([p["treatment"][k] for p in per_seed], [p["control"][k] for p in per_seed])
               for k in ARM_METRICS}
    dsum = stats.summarize([p["action_divergence"] for p in per_seed])
    responds = dsum["mean_ci95"][0] > min_action_effect
    res.update({"action_divergence": dsum, "effects": effects, "responds": bool(responds),
                "verdict": _verdict(iv.expect, responds), "per_seed": per_seed})
    return res


def run_interventions(
    make_env: Callable[[], Any],
    policy: Any,
    interventions: Sequence[Intervention],
    seeds: Sequence[int],
    max_steps: int | None = None,
    min_action_effect: float = 0.02,
    brake_threshold: float = 0.1,
    progress: Callable[[], None] | None = None,
    keep_pairs: bool = False,
) -> dict[str, Any]:
    """Paired rollouts for each intervention on each seed; returns ``{name: result}`` (see module doc)."""
    env = make_env()
    results: dict[str, Any] = {}
    try:
        base_records = {}
        for s in seeds:
            _, info = env.reset(seed=int(s), options=reset_options(s))
            rec = info.get("scenario", {})
            base_records[s] = (rec, scenario_context(env, rec, info))
        for iv in interventions:
            per_seed, pairs = [], []
            skipped = 0
            for s in seeds:
                rec, ctx = base_records[s]
                if not iv.applies(rec):
                    skipped += 1
                    if progress:
                        progress()
                    continue
                b = apply_overrides(rec, iv.base, ctx)
                rc, rt = apply_overrides(b, iv.control, ctx), apply_overrides(b, iv.treatment, ctx)
                tc = rollout(env, policy, s, rc, max_steps=max_steps)
                tt = rollout(env, policy, s, rt, max_steps=max_steps)
                m = pair_metrics(tc, tt, brake_threshold=brake_threshold)
                m["seed"] = int(s)
                per_seed.append(m)
                if keep_pairs:
                    pairs.append((tc, tt))
                if progress:
                    progress()
            res = intervention_result(iv, per_seed, skipped, min_action_effect)
            if not per_seed:
                results[iv.name] = res
                continue
            if keep_pairs:
                res["_pairs"] = pairs
            results[iv.name] = res
    finally:
        env.close()
    return results


def action_sensitivity(policy: Any, observations: Sequence[dict], removals: dict[str, Callable[[dict], dict]]) -> dict[str, Any]:
    """Mean ``|pi(o) - pi(remove_k(o))|_1`` over matched observations for each removal ``k``
    (with a bootstrap CI over the observations). Stateless policies only (frame stacks are reset)."""
    out = {}
    for name, rm in removals.items():
        d = []
        for o in observations:
            if hasattr(policy, "reset") and getattr(policy, "frame_stack", 1) > 1:
                continue
            a = np.asarray(policy(o), np.float64)
            b = np.asarray(policy(rm(o)), np.float64)
            d.append(float(np.abs(a - b).sum()))
        out[name] = stats.summarize(d) if d else {"n": 0, "note": "skipped (stateful policy)"}
    return out


# ---------------------------------------------------------------------------------------------------
# but-for failure attribution
# ---------------------------------------------------------------------------------------------------
def candidate_causes(record: dict, last_info: dict, max_per_kind: int = 2) -> dict[str, dict]:
    """Candidate world causes of a failure as record overrides that remove / neutralise them."""
    c: dict[str, dict] = {}
    if record.get("lead"):
        c["lead vehicle (removed)"] = {"lead": None}
        if record["lead"].get("brake_at_s") is not None:
            c["lead's hard brake (never brakes)"] = {"lead.brake_at_s": None}
    s_fail = float(last_info.get("s_m", 0.0))

    def nearest(items: list, key: str = "s_m") -> list[int]:
        order = sorted(range(len(items)), key=lambda i: abs(float(items[i].get(key, 0.0)) - s_fail))
        return order[:max_per_kind]

    for kind, label in (("obstacles", "obstacle"), ("pedestrians", "pedestrian"), ("traffic", "traffic car")):
        items = record.get(kind) or []
        for i in nearest(items):
            c[f"{label} {i} (removed)"] = {kind: [x for j, x in enumerate(items) if j != i]}
    noise = record.get("sensor_noise") or {}
    if any(float(v) > 0 for v in noise.values()):
        c["sensor noise (off)"] = {"sensor_noise": {k: 0.0 for k in noise}}
    return c


def _substitute_driver(env: Any, policy: Any, traj: Trajectory, drv: Any, b: int, horizon: int) -> dict | None:
    """Replay the factual actions up to step ``b``, save the state there, restore it and let ``drv`` (None:
    an emergency brake, straight) drive to ``horizon``; the row without its cause label (None when the
    episode ended before the branch point, which should not happen)."""
    dt = traj.dt
    holder: dict[str, Any] = {}

    def grab(e, tr, obs, holder=holder):
        holder["state"] = e.unwrapped.save_state()
        holder["obs"] = obs
        holder["prefix"] = tr.steps

    base = rollout(env, policy, traj.seed, traj.scenario, max_steps=b + 1, forced_actions=traj.actions[:b],
                   on_branch=grab, branch_step=b)
    if "state" not in holder:
        return None
    e = env.unwrapped
    e.restore_state(holder["state"])
    obs = holder["obs"]
    if drv is not None and hasattr(drv, "reset"):
        drv.reset(env)
    o_cf = "horizon"
    for t in range(b, horizon):
        act = drv(obs) if drv is not None else np.array([0.0, -1.0], np.float32)
        obs, _, term, trunc, info = env.step(act)
        if term or trunc:
            tmp = Trajectory(traj.seed, {}, {}, dt, infos=[info], actions=[act], terminated=term, truncated=trunc)
            o_cf = tmp.outcome
            break
    e.remove_state(holder["state"])
    del base
    return {"how": f"restore_state at t={b * dt:.2f} s, another driver", "outcome": o_cf,
            "averted": not is_failure(o_cf), "history_consistent": True}


def but_for(
    make_env: Callable[[], Any],
    policy: Any,
    failures: Sequence[Trajectory],
    branch_s: float = 1.5,
    post_s: float = 3.0,
    reference: Any = None,
    max_episodes: int = 5,
) -> list[dict[str, Any]]:
    """For each failed trajectory, which single change from ``branch_s`` before the failure averts it."""
    env = make_env()
    out = []
    try:
        for traj in list(failures)[:max_episodes]:
            T = traj.steps
            dt = traj.dt
            b = max(0, T - int(round(branch_s / dt)))
            horizon = T + int(round(post_s / dt))
            factual = traj.outcome
            rows = []
            forced = traj.actions[:b]
            ref_info = traj.infos[b - 1] if b > 0 else traj.reset_info

            def consistent(cf: Trajectory) -> bool:
                if b == 0:
                    return True
                i = cf.infos[b - 1] if len(cf.infos) >= b else None
                return i is not None and abs(i["s_m"] - ref_info["s_m"]) < 0.05 and abs(i["speed_mps"] - ref_info["speed_mps"]) < 0.05

            for label, ov in candidate_causes(traj.scenario, traj.infos[-1]).items():
                rec = apply_overrides(traj.scenario, ov, {"start_s_m": 0.0, "ego_lane_d_m": 0.0})
                cf = rollout(env, policy, traj.seed, rec, max_steps=horizon, forced_actions=forced)
                o = cf.outcome
                rows.append({"cause": label, "how": "removed from the scene (same history)", "outcome": o,
                             "averted": not is_failure(o),
                             "history_consistent": consistent(cf)})
            # driver substitutions from the restored state at the branch point
            drivers = []
            if reference is not None:
                drivers.append(("the policy's own actions (reference driver takes over)", reference))
            drivers.append(("the policy's own actions (emergency brake, straight)", None))
            for label, drv in drivers:
                row = _substitute_driver(env, policy, traj, drv, b, horizon)
                if row is not None:
                    rows.append({"cause": label, **row})
            out.append({"seed": traj.seed, "failure": factual, "failure_t_s": T * dt, "branch_t_s": b * dt,
                        "causes": rows, "but_for_causes": [r["cause"] for r in rows if r["averted"]]})
    finally:
        env.close()
    return out
