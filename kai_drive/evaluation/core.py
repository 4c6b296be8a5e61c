"""``evaluate(policy, env_id, suite)``: run a suite (safety, robustness, causal, attribution) and return
the result dict (the JSON schema of docs/evaluation.md); :func:`~kai_drive.evaluation.report.write_outputs`
writes JSON + report.

:func:`evaluate` resolves the policy, the env config and the seeds into a :class:`SuiteRun`;
:func:`run_suite` turns it into episode jobs (:mod:`kai_drive.evaluation.jobs`: in this process, or as Ray
tasks with ``ray=True``; both give the same numbers) and assembles the result's sections from their
metrics. What differs between task families (metrics, rates, drops, whether scenario interventions apply)
comes from the env's :class:`~kai_drive.metrics.TaskFamily`. Ray is imported only with ``ray=True``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, Callable

from kai_drive import stats
from kai_drive.evaluation.baselines import BASELINES, default_baselines
from kai_drive.evaluation.causal import Intervention, action_sensitivity, intervention_result
from kai_drive.evaluation.jobs import LOCAL_POLICIES, PolicySpec, Progress, close_envs, policy_of, remote_policy, run_jobs
from kai_drive.evaluation.adapters import as_policy
from kai_drive.evaluation.robustness import drops
from kai_drive.evaluation.rollout import Trajectory, make_env, sensor_transform
from kai_drive.evaluation.suite import Suite, check_thresholds, load_suite, thresholds_for, verdict
from kai_drive.metrics import DrivingMetricConfig, TaskFamily, family_of, is_failure

__all__ = ["evaluate", "load_suite", "check_thresholds", "verdict", "PolicySpec", "SCHEMA", "SuiteRun", "run_suite"]

SCHEMA = "kai-drive-eval/1"


@dataclass
class SuiteRun:
    """One evaluation's plan: the suite (typed, defaults applied; ``suite_config`` as the file set it), the
    policy and how jobs find it, the env, and the seeds of every section."""

    suite: Suite
    suite_config: dict
    policy: Any
    policy_desc: tuple
    env_id: str
    family: TaskFamily
    env_config: dict
    dt: float
    obs_keys: list[str]
    reads_obs: bool
    safety_seeds: list[int]
    robustness_seeds: list[int]
    causal_seeds: list[int]
    conditions: dict[str, dict]
    interventions: list[Intervention]
    sections: tuple[str, ...]
    log: Callable[[str], None]
    use_ray: bool = False
    progress: bool = False
    baseline_descs: dict[str, tuple] = field(default_factory=dict)
    baseline_env: dict | None = None

    @property
    def ctx(self) -> dict:
        """What every job of the evaluated policy shares."""
        return {"env_id": self.env_id, "env_config": self.env_config, "policy": self.policy_desc,
                "task": self.family.name, "safety": self.suite_config.get("safety")}

    @property
    def max_steps(self) -> int | None:
        return int(self.suite.max_episode_s / self.dt) if self.suite.max_episode_s else None

    @property
    def robustness_horizon(self) -> int:
        return int(float(self.suite.robustness.max_s) / self.dt)

    @property
    def causal_horizon(self) -> int:
        return int(float(self.suite.causal.horizon_s) / self.dt)

    @property
    def run_causal(self) -> bool:
        return "causal" in self.sections and bool(self.interventions) and self.family.causal_interventions

    @property
    def attribution_seeds(self) -> int:
        """How many causal seeds keep observations for attribution (0: not differentiable / not asked)."""
        wanted = "attribution" in self.sections and getattr(self.policy, "differentiable", False)
        return int(self.suite.attribution.seeds) if wanted else 0


def _aggregate(per_ep: list[dict], family: TaskFamily) -> dict:
    keys = [k for k in per_ep[0] if k not in ("seed", "outcome")]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [e[k] for e in per_ep]
        out[k] = stats.rate(vals) if k in family.rate_keys else stats.summarize(vals)
    if family.per_km:
        km = [e["distance_km"] for e in per_ep]
        out["per_km"] = {
            "collisions": stats.ratio_summary([e["collision"] for e in per_ep], km),
            **{f"collisions_{k}": stats.ratio_summary([e[f"collisions_{k}"] for e in per_ep], km)
               for k in ("pedestrian", "vehicle", "static")},
            "off_road": stats.ratio_summary([e["off_road_events"] for e in per_ep], km),
            "lane_invasions": stats.ratio_summary([e["lane_invasion_events"] for e in per_ep], km),
        }
    return out


def _outcomes(per_ep: list[dict]) -> dict[str, int]:
    return {o: sum(e["outcome"] == o for e in per_ep) for o in sorted({e["outcome"] for e in per_ep})}


def _has_key(cfg: dict, dotted: str) -> bool:
    """Whether an env config (dotted keys and/or nested dicts, as ``gym.make(config=...)`` takes) sets ``dotted``."""
    if dotted in cfg:
        return True
    parts = dotted.split(".")
    for i in range(1, len(parts)):
        head = ".".join(parts[:i])
        if isinstance(cfg.get(head), dict) and _has_key(cfg[head], ".".join(parts[i:])):
            return True
    return False


# ---------------------------------------------------------------------------------------------------
# evaluate(): resolve the policy, the env config and the seeds; run; check the thresholds
# ---------------------------------------------------------------------------------------------------
def _resolve_policy(policy: Any, env_id: str, task: str) -> tuple[Any, PolicySpec | None]:
    """``(EvalPolicy, its PolicySpec or None)``: built-in names and specs are built, anything else adapted."""
    if isinstance(policy, str):
        if policy not in ("scripted", *BASELINES):
            raise ValueError(f"policy {policy!r}: the built-in policies are 'scripted', "
                             f"{', '.join(repr(b) for b in BASELINES)} (or pass a model / callable)")
        spec = PolicySpec(policy, env_id, task=task)
        return spec.build(), spec
    if isinstance(policy, PolicySpec):
        spec = PolicySpec(policy.kind, env_id, task=task) if policy.kind in ("scripted", *BASELINES) else policy
        return spec.build(), spec
    pol = as_policy(policy)
    spec = next((x for x in (getattr(pol, "spec", None), getattr(policy, "spec", None)) if isinstance(x, PolicySpec)), None)
    return pol, spec


def _env_config(pol: Any, env_config: dict | None, suite: Suite, task: str, reads_obs: bool) -> dict:
    """The suite's defaults for the task < the policy's own (a run's test config) < the caller's; a policy
    that reads no observation drives without the sensors (they only cost time)."""
    cfg = dict(getattr(pol, "env_config", {}) or {})
    cfg.update(env_config or {})
    for k, v in (getattr(suite.env_config, task) or {}).items():
        if not _has_key(cfg, k):
            cfg[k] = v
    if not reads_obs:
        for k in ("sensors.camera.enabled", "sensors.lidar.enabled"):
            if not _has_key(cfg, k):
                cfg[k] = False
    return cfg


def _baseline_specs(suite: Suite, baselines: bool | None, spec: PolicySpec | None, env_id: str, task: str) -> dict:
    """The trivial baselines to run beside the policy (the policy itself, when it is one, is a row already)."""
    names: list[str] = [] if baselines is False else list(getattr(suite.baselines, task, default_baselines(task)))
    return {b: PolicySpec(b, env_id, task=task) for b in names if not (spec is not None and spec.kind == b)}


def _probe(env_id: str, cfg: dict) -> tuple[list[str], float, Any]:
    """``(observation keys, control period dt, renderer)`` of the env."""
    probe = make_env(env_id, cfg)
    obs_keys = sorted(probe.observation_space.spaces) if hasattr(probe.observation_space, "spaces") else []
    dt = 1.0 / float(probe.metadata.get("render_fps", 20))
    renderer = getattr(probe.unwrapped, "renderer", None) or probe.metadata.get("renderer")  # "tiny" / "egl" / "opengl"
    probe.close()
    return obs_keys, dt, renderer


def evaluate(  # long: the public entry point: its arguments resolved in order, then one run
    policy: Any,
    env_id: str,
    suite: str | Path | dict = "quick",
    seeds: int | None = None,
    episodes: int | None = None,
    env_config: dict | None = None,
    progress: bool = False,
    sections: tuple = ("safety", "robustness", "causal", "attribution"),
    log: Callable[[str], None] | None = None,
    ray: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    baselines: bool | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` (SB3 model, :class:`EvalPolicy`, callable ``obs -> action``, :class:`PolicySpec`,
    ``"scripted"``, ``"stop"`` or ``"constant"``) on ``env_id`` with ``suite`` (name, path or dict; validated,
    :mod:`kai_drive.evaluation.suite`). ``result["passed"]`` is True / False, or None when no threshold
    applies to the env. ``seeds`` overrides every section's seed count;
    ``episodes`` only the safety section's. Returns the result dict (see docs/evaluation.md for the schema).

    ``ray=True`` runs the episodes as Ray tasks (``address``: a cluster to join, else ``$RAY_ADDRESS``, else
    an already initialised Ray, else a local instance with ``num_cpus``); the numbers are the same as a
    serial run's. The workers rebuild the policy from its :class:`PolicySpec` (``"scripted"``, and what
    ``python -m kai_drive.evaluate --run/--model`` loads, carry one) or unpickle it (a picklable callable);
    anything else raises ValueError. Needs the extra ``pip install "kai-drive[ray]"``.

    ``baselines``: run the trivial baselines (``stop``, ``constant``; kai_drive/evaluation/baselines.py) on
    the safety seeds beside the policy (``None``: as the suite says, default on; ``False``: off)."""
    from kai_drive.catalog import resolve_env

    env_id, alias = resolve_env(env_id)
    suite_config = load_suite(suite)
    typed = Suite.model_validate(suite_config)
    family = family_of(env_id)
    task = family.name
    pol, spec = _resolve_policy(policy, env_id, task)
    reads_obs = spec is None or spec.reads_obs
    cfg = _env_config(pol, env_config, typed, task, reads_obs)
    baseline_runs = _baseline_specs(typed, baselines, spec, env_id, task)
    n_safe = int(episodes or seeds or typed.seeds)
    safety_seeds = [int(typed.seed_base) + i for i in range(n_safe)]
    DrivingMetricConfig.from_dict(suite_config.get("safety"))  # validate before any episode runs
    remote = None
    if ray:
        from kai_drive.distributed import require_ray

        require_ray("kai_drive.evaluate --ray")
        remote = remote_policy(policy, pol, spec)  # fail before starting Ray
    obs_keys, dt, renderer = _probe(env_id, cfg)
    run = SuiteRun(
        suite=typed, suite_config=suite_config, policy=pol, policy_desc=(), env_id=env_id, family=family,
        env_config=cfg, dt=dt, obs_keys=obs_keys, reads_obs=reads_obs, safety_seeds=safety_seeds,
        robustness_seeds=safety_seeds[:int(seeds or typed.robustness.seeds)],
        causal_seeds=safety_seeds[:int(seeds or typed.causal.seeds)],
        conditions={k: c.model_dump(exclude_unset=True) for k, c in typed.robustness.conditions.items()}
        if "robustness" in sections else {},
        interventions=[Intervention.from_dict(k, v.model_dump(exclude_unset=True)) for k, v in typed.causal.interventions.items()]
        if "causal" in sections else [],
        sections=tuple(sections), log=log or (lambda m: None), use_ray=bool(ray), progress=progress,
        baseline_descs={b: ("spec", sp) for b, sp in baseline_runs.items()},
        baseline_env={**cfg, "sensors.camera.enabled": False, "sensors.lidar.enabled": False})  # they read nothing
    result: dict[str, Any] = {
        "schema": SCHEMA, "env_id": env_id, "env_alias": alias, "policy": pol.name, "suite": suite_config.get("name"),
        "suite_config": suite_config, "env_config": cfg, "renderer": renderer, "observation_keys": obs_keys, "dt_s": dt,
        "seeds": {"safety": safety_seeds}, "wall_s": {}, "notes": [],
    }
    t_all = time.perf_counter()
    _execute(result, run, remote, address, num_cpus)
    result["wall_s"]["total"] = time.perf_counter() - t_all
    _check(result, typed, task)
    result["_policy"] = pol  # not serialised; the report's videos re-run it
    return result


def _execute(result: dict, run: SuiteRun, remote: tuple | None, address: str | None, num_cpus: int | None) -> None:
    """:func:`run_suite` in this process (the policy registered under a token) or inside a Ray session
    (the policy sent as its description); records ``result["execution"]``."""
    token = None
    if run.use_ray:
        import ray as _ray

        from kai_drive.distributed.cluster import ray_session, resolve_address

        where = "the Ray already initialised in this process" if _ray.is_initialized() else (resolve_address(address) or "local")
        session: Any = ray_session(address, num_cpus=num_cpus, what="kai_drive.evaluate --ray")
    else:
        session = contextlib.nullcontext({})
    try:
        with session as resources:
            if run.use_ray:
                assert remote is not None
                if remote[0] == "pickle" and len(remote[2]) > 100_000:  # ship a large policy once
                    remote = (remote[0], remote[1], _ray.put(remote[2]))
                result["execution"] = {"backend": "ray", "address": where,
                                       "cluster_cpus": float(resources.get("CPU", 0.0)), "policy_from": remote[0]}
                run.policy_desc = remote
            else:
                token = f"{id(run.policy)}:{time.perf_counter_ns()}"
                LOCAL_POLICIES[token] = run.policy
                run.policy_desc = ("local", token)
                result["execution"] = {"backend": "serial"}
            run_suite(run, result)
    finally:
        if token is not None:
            LOCAL_POLICIES.pop(token, None)
            close_envs()


def _check(result: dict, suite: Suite, task: str) -> None:
    """The suite's thresholds on the safety summary (and on each baseline's), the verdict, and notes."""
    applicable, skipped = thresholds_for(suite.thresholds, task)
    result["thresholds"] = check_thresholds({"safety": result["safety"]["summary"]}, applicable) + skipped
    result["passed"] = verdict(result["thresholds"])
    if result["passed"] is None:
        result["notes"].append(f"no thresholds apply: the suite has none for a {task} env, so nothing was checked "
                               f"(add `thresholds: {{{task}: {{path: condition}}}}` to the suite); exit status 3")
    for b, row in (result.get("baselines") or {}).items():
        row["thresholds"] = check_thresholds({"safety": row["summary"]}, applicable)
        row["passed"] = verdict(row["thresholds"])
        if row["passed"]:
            result["notes"].append(f"the suite's thresholds PASS the trivial `{b}` baseline ({row['policy']}): they "
                                   "reward inaction or blind driving and cannot tell a good policy from it")


# ---------------------------------------------------------------------------------------------------
# run_suite(): the episodes of every section in one batch of jobs, then the sections from their metrics
# ---------------------------------------------------------------------------------------------------
def _condition_note(run: SuiteRun, c: dict) -> str | None:
    """Why a robustness condition does not apply to this policy / env (None: it applies)."""
    need = c.get("needs")
    if "scenario" in c and not run.family.scenario_factors:
        return f"skipped: the {run.family.name} env has no scenario factors (light, colours) settable through reset options"
    if need and need not in run.obs_keys:
        return f"skipped: the policy has no {need} observation"
    if not run.reads_obs and ("transform" in c or "attack" in c):
        return "skipped: the policy does not read observations (privileged scripted / trivial baseline)"
    if "attack" in c and not getattr(run.policy, "differentiable", False):
        return "skipped: the policy is not differentiable (attacks need an SB3 torch policy)"
    return None


def _episode_jobs(run: SuiteRun) -> tuple[list[dict], dict[str, str]]:
    """The jobs of the safety, baseline, robustness and paired-intervention episodes, and the notes of the
    robustness conditions that do not apply."""
    ctx, max_steps = run.ctx, run.max_steps
    obs_budget = int(run.suite.causal.modality.max_obs)
    every = max(1, int(round(0.5 / run.dt)))
    jobs = [{"ctx": ctx, "kind": "safety", "seed": s, "max_steps": max_steps,
             "record_obs_every": every if run.reads_obs and obs_budget > 0 else 0} for s in run.safety_seeds]
    for b, desc in run.baseline_descs.items():  # trivial baselines on the same safety seeds (they read nothing)
        bctx = {**ctx, "policy": desc, "env_config": run.baseline_env if run.baseline_env is not None else run.env_config}
        jobs += [{"ctx": bctx, "kind": "baseline", "name": b, "seed": s, "max_steps": max_steps, "record_obs_every": 0}
                 for s in run.safety_seeds]
    notes: dict[str, str] = {}
    for name, c in run.conditions.items():
        note = _condition_note(run, c)
        if note is not None:
            notes[name] = note
            continue
        jobs += [{"ctx": ctx, "kind": "robustness", "name": name, "condition": c, "seed": s,
                  "max_steps": run.robustness_horizon} for s in run.robustness_seeds]
    if run.run_causal:
        raw = {k: v.model_dump(exclude_unset=True) for k, v in run.suite.causal.interventions.items()}
        n_attr = run.attribution_seeds
        jobs += [{"ctx": ctx, "kind": "pair", "name": iv.name, "intervention": raw[iv.name], "seed": s,
                  "max_steps": run.causal_horizon, "keep_obs": i < n_attr}
                 for iv in run.interventions for i, s in enumerate(run.causal_seeds)]
    return jobs, notes


def run_suite(run: SuiteRun, result: dict) -> None:
    """Run every episode of ``run`` and fill ``result``'s sections (safety, baselines, robustness, causal,
    attribution), their wall times and ``_trajectories`` (not serialised; the report's videos use them)."""
    bar = Progress(0, run.progress)
    jobs, notes = _episode_jobs(run)
    bar.set("episodes")
    t0 = time.perf_counter()
    done = run_jobs(jobs, bar, run.use_ray)
    result["wall_s"]["episodes"] = time.perf_counter() - t0
    if run.use_ray:
        run.log(f"episodes: {len(jobs)} jobs on Ray in {result['wall_s']['episodes']:.1f} s")
    by_kind: dict[str, list[dict]] = {"safety": [], "baseline": [], "robustness": [], "pair": []}
    for j, r in zip(jobs, done):
        by_kind[j["kind"]].append(r)
    trajs: list[Trajectory] = [r["traj"] for r in by_kind["safety"]]
    _safety_section(run, result, by_kind["safety"])
    if run.baseline_descs:
        _baselines_section(run, result, by_kind["baseline"])
    if run.conditions:
        _robustness_section(run, result, by_kind["robustness"], trajs, notes)
    if run.run_causal:
        _causal_section(run, result, by_kind["pair"], trajs, bar)
    elif not run.family.causal_interventions and "causal" in run.sections:
        if run.interventions:
            result["notes"].append(f"causal interventions and but-for attribution skipped: the {run.family.name} env "
                                   "has no scenario factors to intervene on (its reset takes no scenario options)")
        if run.reads_obs:  # what removing each sensor changes in the decision applies to any env
            result["causal"] = {"modality": _modality(run, trajs, result.get("robustness", {}))}
    bar.close()
    result["_trajectories"] = trajs


def _busy(run: SuiteRun) -> str:
    return " of worker time" if run.use_ray else ""


def _safety_section(run: SuiteRun, result: dict, rows: list[dict]) -> None:
    per_ep = [r["metrics"] for r in rows]
    result["safety"] = {"per_episode": per_ep, "summary": _aggregate(per_ep, run.family), "outcomes": _outcomes(per_ep)}
    result["wall_s"]["safety"] = sum((r["seconds"] for r in rows), 0.0)
    run.log(f"safety: {len(run.safety_seeds)} episodes in {result['wall_s']['safety']:.1f} s{_busy(run)}")


def _baselines_section(run: SuiteRun, result: dict, rows: list[dict]) -> None:
    it = iter(rows)
    bls: dict[str, Any] = {}
    for b, desc in run.baseline_descs.items():
        per_b = [next(it)["metrics"] for _ in run.safety_seeds]
        bls[b] = {"policy": policy_of(desc).name, "summary": _aggregate(per_b, run.family),
                  "outcomes": _outcomes(per_b), "per_episode": per_b}
    result["baselines"] = bls
    result["wall_s"]["baselines"] = sum((r["seconds"] for r in rows), 0.0)
    run.log(f"baselines: {', '.join(run.baseline_descs)} on the same {len(run.safety_seeds)} seeds in "
            f"{result['wall_s']['baselines']:.1f} s{_busy(run)}")


def _robustness_section(run: SuiteRun, result: dict, rows: list[dict], trajs: list[Trajectory],
                        notes: dict[str, str]) -> None:
    """Each condition's summary and its paired drop against the clean safety episodes cut to the same horizon."""
    horizon = run.robustness_horizon
    mcfg = DrivingMetricConfig.from_dict(run.suite_config.get("safety"))
    clean = []
    for tr in trajs[:len(run.robustness_seeds)]:
        m = run.family.episode_metrics(tr.infos[:horizon], tr.dt, mcfg)
        m["seed"] = tr.seed
        clean.append(m)
    rob: dict[str, Any] = {"clean": {"summary": _aggregate(clean, run.family)}, "horizon_s": horizon * run.dt}
    it = iter(rows)
    for name in run.conditions:
        if name in notes:
            rob[name] = {"note": notes[name]}
            continue
        res = [next(it)["metrics"] for _ in run.robustness_seeds]
        rob[name] = {"summary": _aggregate(res, run.family), "drop": drops(clean, res, run.family.drop_metrics),
                     "per_episode": res}
    result["robustness"] = rob
    result["wall_s"]["robustness"] = sum((r["seconds"] for r in rows), 0.0)
    run.log(f"robustness: {len(run.conditions)} conditions in {result['wall_s']['robustness']:.1f} s{_busy(run)}")


def _causal_section(run: SuiteRun, result: dict, rows: list[dict], trajs: list[Trajectory], bar: Progress) -> None:
    """Interventions (paired seeds), modality reliance, but-for attribution of the failed safety episodes,
    then attribution (captum) on the pairs the causal jobs kept."""
    t0 = time.perf_counter()
    bar.set("causal")
    causal_cfg = run.suite.causal
    inter: dict[str, Any] = {}
    pairs_of: dict[str, list] = {}
    it = iter(rows)
    for iv in run.interventions:
        ivrows = [next(it) for _ in run.causal_seeds]
        inter[iv.name] = intervention_result(iv, [r["metrics"] for r in ivrows if r["applies"]],
                                              sum(not r["applies"] for r in ivrows), float(causal_cfg.min_action_effect))
        pairs_of[iv.name] = [r["pair"] for r in ivrows if r["applies"] and "pair" in r]
    causal: dict[str, Any] = {"horizon_s": run.causal_horizon * run.dt, "interventions": inter}
    causal["modality"] = _modality(run, trajs, result.get("robustness", {}))
    # but-for attribution of failures: one job per failed episode (its trajectory, without observations)
    bf = causal_cfg.but_for
    fails = [tr for tr in trajs if is_failure(tr.outcome)]
    bf_jobs = [{"ctx": run.ctx, "kind": "but_for", "traj": dc_replace(tr, obs={}, frames=[]),
                "branch_s": float(bf.branch_s), "post_s": float(bf.post_s)}
               for tr in fails[:int(bf.max_episodes)]]
    t_bf = time.perf_counter()
    bf_done = run_jobs(bf_jobs, bar, run.use_ray)
    causal["but_for"] = [r["row"] for r in bf_done]
    causal["failed_episodes"] = len(fails)
    result["causal"] = causal
    result["wall_s"]["causal"] = sum(r["seconds"] for r in rows) + sum(r["seconds"] for r in bf_done) + (t_bf - t0)
    run.log(f"causal: {len(run.interventions)} interventions x {len(run.causal_seeds)} seeds in "
            f"{result['wall_s']['causal']:.1f} s{_busy(run)}")
    if run.attribution_seeds > 0:
        t0 = time.perf_counter()
        bar.set("attribution")
        from kai_drive.evaluation.attribution import intervention_agreement

        n_steps = int(run.suite.attribution.n_steps)
        result["attribution"] = {iv.name: intervention_agreement(run.policy, pairs_of[iv.name], n_steps=n_steps)
                                 for iv in run.interventions if inter[iv.name].get("n")}
        result["wall_s"]["attribution"] = time.perf_counter() - t0
    elif "attribution" in run.sections:
        result["attribution"] = {"note": "skipped: the policy is not differentiable (captum needs an SB3 torch policy)"}


def _modality(run: SuiteRun, trajs: list[Trajectory], rob: dict) -> dict:
    """Modality reliance: action change at matched states + the outcome change (the family's score) from
    robustness."""
    if not run.reads_obs:
        return {"note": "skipped: the policy does not read observations (privileged scripted / trivial baseline)"}
    obs_list = [o for tr in trajs for o in tr.obs.values()][:int(run.suite.causal.modality.max_obs)]
    specs = {"camera": {"camera": "black"}, "lidar": {"lidar": "missing"}, "depth": {"depth": "zero"},
             "state": {"state": "zero"}}
    removals = {k: sensor_transform(v, 0) for k, v in specs.items() if k in run.obs_keys}
    rm = {k: (lambda o, f=f: f(o, 0)) for k, f in removals.items()}
    sens = action_sensitivity(run.policy, obs_list, rm)
    cond_of = {"camera": "camera_black", "lidar": "lidar_missing"}
    key = run.family.score_key
    return {k: {"action_change": v, "outcome_drop": (rob.get(cond_of.get(k, ""), {}).get("drop") or {}).get(key)}
            for k, v in sens.items()}
