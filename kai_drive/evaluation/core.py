"""``evaluate(policy, env_id, suite)``: run a suite (safety, robustness, causal, attribution) and return
the result dict (the JSON schema of docs/evaluation.md); :func:`write_outputs` writes JSON + report."""

from __future__ import annotations

import copy
import math
import operator
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from kai_drive import stats
from kai_drive.evaluation.causal import Intervention, action_sensitivity, but_for, run_interventions
from kai_drive.evaluation.metrics import DrivingMetricConfig, driving_metrics, grasp_metrics
from kai_drive.evaluation.policies import as_policy, scripted_policy
from kai_drive.evaluation.robustness import DROP_METRICS, GRASP_DROP_METRICS, AdversarialPolicy, drops
from kai_drive.evaluation.runner import Trajectory, episode_outcome, make_env, rollout, sensor_transform

__all__ = ["evaluate", "load_suite", "check_thresholds", "SCHEMA"]

SCHEMA = "kai-drive-eval/1"
_RATE_KEYS = ("success", "collision", "off_road", "comfortable", "within_budget")
_GRASP_RATE_KEYS = ("success",)


def load_suite(suite: str | Path | dict) -> dict:
    """A suite by name (``quick``, ``full``: configs/eval/<name>.yaml), path, or dict."""
    if isinstance(suite, dict):
        return copy.deepcopy(suite)
    p = Path(suite)
    if not p.suffix:
        from kai_drive.catalog import catalog_dir

        p = catalog_dir("configs") / "eval" / f"{suite}.yaml"
        if not p.exists():
            names = sorted(q.stem for q in p.parent.glob("*.yaml"))
            raise FileNotFoundError(f"unknown suite {suite!r}; known: {names} (configs/eval/) or a path to a YAML")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a suite is a mapping (see configs/eval/quick.yaml)")
    unknown = set(data) - {"name", "description", "seeds", "seed_base", "safety", "robustness", "causal",
                           "attribution", "report", "thresholds", "max_episode_s"}
    if unknown:
        raise ValueError(f"{p}: unknown keys {sorted(unknown)}")
    data.setdefault("name", p.stem)
    return data


_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


def check_thresholds(summary: dict, thresholds: dict) -> list[dict]:
    """``[{"path", "condition", "actual", "passed"}]``; a path missing from ``summary`` fails."""
    out = []
    for path, cond in (thresholds or {}).items():
        op, val = str(cond).split()[0], float(str(cond).split()[1])
        if op not in _OPS:
            raise ValueError(f"threshold {path}: {cond!r}; write e.g. '>= 0.8'")
        cur: Any = summary
        for k in path.split("."):
            cur = cur.get(k) if isinstance(cur, dict) else None
        ok = cur is not None and not (isinstance(cur, float) and math.isnan(cur)) and _OPS[op](float(cur), val)
        out.append({"path": path, "condition": cond, "actual": cur, "passed": bool(ok)})
    return out


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ep", desc="evaluate")

    def __call__(self, desc: str | None = None) -> None:
        if self.bar is not None:
            if desc:
                self.bar.set_description(desc)
            self.bar.update(1)

    def set(self, desc: str) -> None:
        if self.bar is not None:
            self.bar.set_description(desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _aggregate(per_ep: list[dict], rate_keys: tuple) -> dict:
    keys = [k for k in per_ep[0] if k not in ("seed", "outcome")]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [e[k] for e in per_ep]
        out[k] = stats.rate(vals) if k in rate_keys else stats.summarize(vals)
    if "distance_km" in per_ep[0]:
        km = [e["distance_km"] for e in per_ep]
        out["per_km"] = {
            "collisions": stats.ratio_summary([e["collision"] for e in per_ep], km),
            **{f"collisions_{k}": stats.ratio_summary([e[f"collisions_{k}"] for e in per_ep], km)
               for k in ("pedestrian", "vehicle", "static")},
            "off_road": stats.ratio_summary([e["off_road_events"] for e in per_ep], km),
            "lane_invasions": stats.ratio_summary([e["lane_invasion_events"] for e in per_ep], km),
        }
    return out


def evaluate(
    policy: Any,
    env_id: str,
    suite: str | Path | dict = "quick",
    seeds: int | None = None,
    episodes: int | None = None,
    env_config: dict | None = None,
    progress: bool = False,
    sections: tuple = ("safety", "robustness", "causal", "attribution"),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` (SB3 model, :class:`EvalPolicy`, callable ``obs -> action``, or ``"scripted"``)
    on ``env_id`` with ``suite``. ``seeds`` overrides every section's seed count; ``episodes`` only the
    safety section's. Returns the result dict (see docs/evaluation.md for the schema)."""
    from kai_drive.catalog import resolve_env

    env_id, alias = resolve_env(env_id)
    S = load_suite(suite)
    pol = scripted_policy(env_id) if policy == "scripted" else as_policy(policy)
    reads_obs = not isinstance(policy, str)
    is_grasp = "grasp" in env_id.lower()
    cfg = dict(getattr(pol, "env_config", {}) or {})
    cfg.update(env_config or {})
    if not reads_obs:  # privileged scripted policy: sensors only cost time
        cfg.setdefault("sensors.camera.enabled", False)
        cfg.setdefault("sensors.lidar.enabled", False)
    mk = lambda: make_env(env_id, cfg)  # noqa: E731
    base = int(S.get("seed_base", 2**30 + 2**29))
    n_safe = int(episodes or seeds or S.get("seeds", 10))
    safety_seeds = [base + i for i in range(n_safe)]
    R, C, A = S.get("robustness") or {}, S.get("causal") or {}, S.get("attribution") or {}
    n_rob = int(seeds or R.get("seeds", 10))
    n_cau = int(seeds or C.get("seeds", 10))
    mcfg = DrivingMetricConfig.from_dict(S.get("safety"))
    metric_fn = grasp_metrics if is_grasp else driving_metrics
    log = log or (lambda m: None)

    probe = mk()
    obs_keys = sorted(probe.observation_space.spaces) if hasattr(probe.observation_space, "spaces") else []
    dt = 1.0 / float(probe.metadata.get("render_fps", 20))
    probe.close()

    conds = dict(R.get("conditions") or {}) if "robustness" in sections else {}
    ivs = [Intervention.from_dict(k, v) for k, v in (C.get("interventions") or {}).items()] if "causal" in sections else []
    total = n_safe + len(conds) * min(n_rob, n_safe) + (0 if is_grasp else len(ivs) * n_cau)
    bar = _Progress(total, progress)
    result: dict[str, Any] = {
        "schema": SCHEMA, "env_id": env_id, "env_alias": alias, "policy": pol.name, "suite": S.get("name"),
        "suite_config": S, "env_config": cfg, "observation_keys": obs_keys, "dt_s": dt,
        "seeds": {"safety": safety_seeds}, "wall_s": {}, "notes": [],
    }
    t_all = time.perf_counter()

    # -- safety ------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    bar.set("safety")
    env = mk()
    trajs: list[Trajectory] = []
    per_ep = []
    max_steps = int(S["max_episode_s"] / dt) if S.get("max_episode_s") else None
    mod = C.get("modality") or {}
    obs_budget = int(mod.get("max_obs", 200))
    every = max(1, int(round(0.5 / dt)))
    for s in safety_seeds:
        tr = rollout(env, pol, s, max_steps=max_steps, record_obs_every=every if reads_obs and obs_budget > 0 else 0)
        m = metric_fn(tr.infos, tr.dt, mcfg)
        m["seed"], m["outcome"] = s, episode_outcome(tr)
        per_ep.append(m)
        trajs.append(tr)
        bar()
    env.close()
    rate_keys = _GRASP_RATE_KEYS if is_grasp else _RATE_KEYS
    result["safety"] = {"per_episode": per_ep, "summary": _aggregate(per_ep, rate_keys),
                        "outcomes": {o: sum(e["outcome"] == o for e in per_ep) for o in sorted({e["outcome"] for e in per_ep})}}
    result["wall_s"]["safety"] = time.perf_counter() - t0
    log(f"safety: {n_safe} episodes in {result['wall_s']['safety']:.1f} s")

    # -- robustness --------------------------------------------------------------------------------
    if conds:
        t0 = time.perf_counter()
        rob_seeds = safety_seeds[:n_rob]
        horizon = int(float(R.get("max_s", 20)) / dt)
        clean = []
        for tr in trajs[:n_rob]:
            m = metric_fn(tr.infos[:horizon], tr.dt, mcfg)
            m["seed"] = tr.seed
            clean.append(m)
        rob: dict[str, Any] = {"clean": {"summary": _aggregate(clean, rate_keys)}, "horizon_s": horizon * dt}
        dm = GRASP_DROP_METRICS if is_grasp else DROP_METRICS
        env = mk()
        for name, c in conds.items():
            bar.set(f"robustness: {name}")
            note = None
            need = c.get("needs")
            if need and need not in obs_keys:
                note = f"skipped: the policy has no {need} observation"
            elif not reads_obs and ("transform" in c or "attack" in c):
                note = "skipped: the privileged scripted policy does not read observations"
            elif "scenario" in c and is_grasp:
                note = "skipped: the env has no scenario factors"
            p_use, transform, scen = pol, None, None
            if note is None and "attack" in c:
                if not getattr(pol, "differentiable", False):
                    note = "skipped: the policy is not differentiable (attacks need an SB3 torch policy)"
                else:
                    a = c["attack"]
                    p_use = AdversarialPolicy(pol, a.get("eps", {}), a.get("method", "pgd"), int(a.get("steps", 3)))
            if note is not None:
                rob[name] = {"note": note}
                for _ in rob_seeds:
                    bar()
                continue
            res = []
            for s in rob_seeds:
                if "transform" in c:
                    transform = sensor_transform(c["transform"], s)
                scen = None
                if "scenario" in c:
                    from kai_drive.evaluation.runner import apply_overrides, reset_options

                    _, info = env.reset(seed=s, options=reset_options(s))
                    scen = apply_overrides(info["scenario"], c["scenario"], {"start_s_m": 0.0, "ego_lane_d_m": 0.0})
                tr = rollout(env, p_use, s, scen, obs_transform=transform, max_steps=horizon)
                m = metric_fn(tr.infos, tr.dt, mcfg)
                m["seed"] = s
                res.append(m)
                bar()
            rob[name] = {"summary": _aggregate(res, rate_keys), "drop": drops(clean, res, dm), "per_episode": res}
        env.close()
        result["robustness"] = rob
        result["wall_s"]["robustness"] = time.perf_counter() - t0
        log(f"robustness: {len(conds)} conditions in {result['wall_s']['robustness']:.1f} s")

    # -- causal ------------------------------------------------------------------------------------
    if ivs and not is_grasp:
        t0 = time.perf_counter()
        bar.set("causal")
        cau_seeds = safety_seeds[:n_cau]
        n_attr = int(A.get("seeds", 3)) if "attribution" in sections and getattr(pol, "differentiable", False) else 0
        horizon = int(float(C.get("horizon_s", 10)) / dt)
        # keep paired trajectories with observations for attribution on the first n_attr seeds
        inter = run_interventions(mk, pol, ivs, cau_seeds, max_steps=horizon,
                                  min_action_effect=float(C.get("min_action_effect", 0.02)), progress=bar)
        causal: dict[str, Any] = {"horizon_s": horizon * dt, "interventions": inter}
        # modality reliance: action change at matched states + outcome drop from robustness
        if reads_obs:
            obs_list = [o for tr in trajs for o in tr.obs.values()][:obs_budget]
            removals = {}
            if "camera" in obs_keys:
                removals["camera"] = sensor_transform({"camera": "black"}, 0)
            if "lidar" in obs_keys:
                removals["lidar"] = sensor_transform({"lidar": "missing"}, 0)
            if "state" in obs_keys:
                removals["state"] = sensor_transform({"state": "zero"}, 0)
            rm = {k: (lambda o, f=f: f(o, 0)) for k, f in removals.items()}
            sens = action_sensitivity(pol, obs_list, rm)
            rob = result.get("robustness", {})
            cond_of = {"camera": "camera_black", "lidar": "lidar_missing"}
            causal["modality"] = {k: {"action_change": v,
                                      "outcome_drop": (rob.get(cond_of.get(k, ""), {}).get("drop") or {}).get("driving_score")}
                                  for k, v in sens.items()}
        else:
            causal["modality"] = {"note": "skipped: the privileged scripted policy does not read observations"}
        # but-for attribution of failures
        bf = C.get("but_for") or {}
        fails = [tr for tr in trajs if episode_outcome(tr).startswith("collision") or episode_outcome(tr) in ("off_road", "lane_invasion")]
        causal["but_for"] = but_for(mk, pol, fails, float(bf.get("branch_s", 1.5)), float(bf.get("post_s", 3.0)),
                                    reference=scripted_policy(env_id), max_episodes=int(bf.get("max_episodes", 3)))
        causal["failed_episodes"] = len(fails)
        result["causal"] = causal
        result["wall_s"]["causal"] = time.perf_counter() - t0
        log(f"causal: {len(ivs)} interventions x {n_cau} seeds in {result['wall_s']['causal']:.1f} s")

        # -- attribution (captum) -----------------------------------------------------------------
        if n_attr > 0:
            t0 = time.perf_counter()
            bar.set("attribution")
            from kai_drive.evaluation.attribution import intervention_agreement

            env = mk()
            agree = {}
            for iv in ivs:
                if not inter.get(iv.name, {}).get("n"):
                    continue
                pairs = []
                from kai_drive.evaluation.runner import apply_overrides, reset_options, scenario_context

                for s in cau_seeds[:n_attr]:
                    _, info = env.reset(seed=s, options=reset_options(s))
                    rec = info["scenario"]
                    if not iv.applies(rec):
                        continue
                    ctx = scenario_context(env, rec, info)
                    b = apply_overrides(rec, iv.base, ctx)
                    tc = rollout(env, pol, s, apply_overrides(b, iv.control, ctx), max_steps=horizon, record_obs_every=1)
                    tt = rollout(env, pol, s, apply_overrides(b, iv.treatment, ctx), max_steps=horizon, record_obs_every=1)
                    pairs.append((tc, tt))
                agree[iv.name] = intervention_agreement(pol, pairs, n_steps=int(A.get("n_steps", 16)))
            env.close()
            result["attribution"] = agree
            result["wall_s"]["attribution"] = time.perf_counter() - t0
        elif "attribution" in sections:
            result["attribution"] = {"note": "skipped: the policy is not differentiable (captum needs an SB3 torch policy)"}
    elif is_grasp and ivs:
        result["notes"].append("causal interventions skipped: the grasp env has no scenario factors")
    bar.close()
    result["_trajectories"] = trajs  # not serialised; used for videos
    result["wall_s"]["total"] = time.perf_counter() - t_all

    summary = {"safety": result["safety"]["summary"]}
    result["thresholds"] = check_thresholds(summary, S.get("thresholds") or {})
    result["passed"] = all(t["passed"] for t in result["thresholds"])
    return result
