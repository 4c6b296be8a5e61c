"""``evaluate(policy, env_id, suite)``: run a suite (safety, robustness, causal, attribution) and return
the result dict (the JSON schema of docs/evaluation.md); :func:`write_outputs` writes JSON + report.

Every episode is a job of the module-level :func:`_episode_job` with a picklable item, run in order in
this process or, with ``ray=True``, as Ray tasks on workers that rebuild the env and the policy (from a
:class:`PolicySpec`); both give the same numbers (tests/test_evaluate_ray.py). Ray is imported only then.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, Callable

from kai_drive import stats
from kai_drive.evaluation.baselines import BASELINES, baseline_policy, default_baselines
from kai_drive.evaluation.causal import ARM_METRICS, Intervention, _verdict, action_sensitivity, but_for, pair_metrics
from kai_drive.evaluation.metrics import DrivingMetricConfig, driving_metrics, grasp_metrics
from kai_drive.evaluation.policies import as_policy, scripted_policy
from kai_drive.evaluation.robustness import DROP_METRICS, GRASP_DROP_METRICS, AdversarialPolicy, drops
from kai_drive.evaluation.runner import (
    Trajectory,
    apply_overrides,
    episode_outcome,
    make_env,
    reset_options,
    rollout,
    scenario_context,
    sensor_transform,
)
from kai_drive.evaluation.suite import OPS, load_suite, parse_condition, task_metrics

__all__ = ["evaluate", "load_suite", "check_thresholds", "verdict", "PolicySpec", "SCHEMA"]

SCHEMA = "kai-drive-eval/1"
_RATE_KEYS = ("success", "collision", "off_road", "comfortable", "within_budget")
_GRASP_RATE_KEYS = ("success",)


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


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.n = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ep", desc="evaluate")

    def __call__(self, desc: str | None = None) -> None:
        self.n += 1
        if self.bar is not None:
            if desc:
                self.bar.set_description(desc)
            self.bar.update(1)

    def add(self, n: int) -> None:
        """``n`` more episodes to come."""
        if self.bar is not None:
            self.bar.total = (self.bar.total or 0) + n
            self.bar.refresh()

    def to(self, n: int) -> None:
        """``n`` episodes done in all."""
        if self.bar is not None and n > self.n:
            self.bar.update(n - self.n)
        self.n = max(self.n, n)

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




# ---------------------------------------------------------------------------------------------------
# Episode jobs: every episode is ``_episode_job(item)``, a module-level function of a picklable item that
# names everything the episode depends on (env id and config, a policy *description*, the seed, the
# perturbation). The serial path runs the jobs in order in this process; ``ray=True`` maps the same jobs
# over Ray workers (kai_drive.distributed.map_episodes). kai-drive envs draw all randomness from the
# seed given to reset (and reset rebuilds the world), so a job gives the same bytes wherever it runs.
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PolicySpec:
    """A policy described by what rebuilds it in another process (a Ray worker).

    ``kind``: ``scripted`` (the privileged baseline of ``env_id``), ``stop`` / ``constant`` (the trivial
    baselines of kai_drive/evaluation/baselines.py for ``task``), ``run`` (a training run folder
    ``path``, ``checkpoint`` final/best, as ``--run``) or ``model`` (an SB3 ``.zip`` ``path`` with optional
    ``algo`` and ``vecnormalize``, as ``--model``). Paths are made absolute; on a multi-node cluster
    they must be readable at the same path on every node (a shared filesystem).
    """

    kind: str
    env_id: str = ""
    path: str = ""
    checkpoint: str = "final"
    algo: str | None = None
    vecnormalize: str | None = None
    task: str = "driving"

    def __post_init__(self) -> None:
        if self.kind not in ("scripted", "run", "model", *BASELINES):
            raise ValueError(f"PolicySpec.kind must be 'scripted', {', '.join(repr(b) for b in BASELINES)}, 'run' or "
                             f"'model', got {self.kind!r}")
        if self.kind in ("run", "model") and not self.path:
            raise ValueError(f"PolicySpec({self.kind!r}) needs a path")
        if self.path:
            object.__setattr__(self, "path", str(Path(self.path).expanduser().resolve()))
        if self.vecnormalize:
            object.__setattr__(self, "vecnormalize", str(Path(self.vecnormalize).expanduser().resolve()))

    def build(self) -> Any:
        """The :class:`~kai_drive.evaluation.policies.EvalPolicy` (with ``.spec`` = this spec)."""
        from kai_drive.evaluation.policies import load_model, load_run

        if self.kind == "scripted":
            return scripted_policy(self.env_id)
        if self.kind in BASELINES:
            pol = baseline_policy(self.kind, self.task)
            pol.spec = self
            return pol
        if self.kind == "run":
            pol, _ = load_run(self.path, self.checkpoint)
        else:
            pol = load_model(self.path, self.algo, self.vecnormalize)
        pol.spec = self
        return pol


_LOCAL_POLICIES: dict[str, Any] = {}  # serial runs: token -> the caller's policy object (never pickled)
_WORKER_POLICIES: dict[Any, Any] = {}  # per process: spec / pickle digest -> rebuilt policy
_WORKER_ENVS: OrderedDict[tuple, Any] = OrderedDict()  # per process: (env_id, config) -> env (reset rebuilds it)


def _policy_of(desc: tuple) -> Any:
    kind = desc[0]
    if kind == "local":
        return _LOCAL_POLICIES[desc[1]]
    key = desc[1] if kind == "spec" else ("pickle", desc[1])
    pol = _WORKER_POLICIES.get(key)
    if pol is None:
        if kind == "spec":
            pol = desc[1].build()
        else:
            import pickle

            blob = desc[2]
            if not isinstance(blob, bytes):  # a Ray ObjectRef of the bytes (large policies)
                import ray

                blob = ray.get(blob)
            pol = as_policy(pickle.loads(blob))
        if len(_WORKER_POLICIES) >= 4:
            _WORKER_POLICIES.clear()
        _WORKER_POLICIES[key] = pol
    return pol


def _env_of(env_id: str, cfg: dict) -> Any:
    key = (env_id, json.dumps(cfg, sort_keys=True, default=str))
    env = _WORKER_ENVS.pop(key, None)
    if env is None:
        env = make_env(env_id, cfg)
    _WORKER_ENVS[key] = env
    while len(_WORKER_ENVS) > 2:
        _, old = _WORKER_ENVS.popitem(last=False)
        old.close()
    return env


def _close_envs() -> None:
    while _WORKER_ENVS:
        _, env = _WORKER_ENVS.popitem()
        env.close()


def _episode_job(item: dict) -> dict:
    """One episode (or one paired / but-for replay) of an evaluation; depends only on ``item``.

    ``item["kind"]``: ``safety`` (a clean episode: metrics and the trajectory), ``baseline`` (a clean
    episode of a trivial baseline: metrics), ``robustness`` (one
    condition on one seed: metrics), ``pair`` (one intervention's control and treatment arms on one
    seed: paired metrics, and the two trajectories with observations when ``keep_obs``), ``but_for``
    (the but-for replays of one failed trajectory)."""
    t0 = time.perf_counter()
    ctx, kind = item["ctx"], item["kind"]
    env_id, cfg = ctx["env_id"], ctx["env_config"]
    pol = _policy_of(ctx["policy"])
    metric_fn = grasp_metrics if ctx["task"] == "grasp" else driving_metrics
    mcfg = DrivingMetricConfig.from_dict(ctx.get("safety"))
    out: dict[str, Any] = {}
    if kind in ("safety", "baseline"):
        s = int(item["seed"])
        tr = rollout(_env_of(env_id, cfg), pol, s, max_steps=item["max_steps"], record_obs_every=item["record_obs_every"])
        m = metric_fn(tr.infos, tr.dt, mcfg)
        m["seed"], m["outcome"] = s, episode_outcome(tr)
        out = {"metrics": m, "traj": tr} if kind == "safety" else {"metrics": m}
    elif kind == "robustness":
        s, c = int(item["seed"]), item["condition"]
        env = _env_of(env_id, cfg)
        p_use, transform, scen = pol, None, None
        if "attack" in c:  # the attack's random start is seeded by the episode, not by the job order
            a = c["attack"]
            p_use = AdversarialPolicy(pol, a.get("eps", {}), a.get("method", "pgd"), int(a.get("steps", 3)), seed=s)
        if "transform" in c:
            transform = sensor_transform(c["transform"], s)
        if "scenario" in c:
            _, info = env.reset(seed=s, options=reset_options(s))
            scen = apply_overrides(info["scenario"], c["scenario"], {"start_s_m": 0.0, "ego_lane_d_m": 0.0})
        tr = rollout(env, p_use, s, scen, obs_transform=transform, max_steps=item["max_steps"])
        m = metric_fn(tr.infos, tr.dt, mcfg)
        m["seed"] = s
        out = {"metrics": m}
    elif kind == "pair":
        s = int(item["seed"])
        iv = Intervention.from_dict(item["name"], item["intervention"])
        env = _env_of(env_id, cfg)
        _, info = env.reset(seed=s, options=reset_options(s))
        rec = info.get("scenario", {})
        out = {"applies": iv.applies(rec)}
        if out["applies"]:
            sctx = scenario_context(env, rec, info)
            b = apply_overrides(rec, iv.base, sctx)
            every = 1 if item.get("keep_obs") else 0
            tc = rollout(env, pol, s, apply_overrides(b, iv.control, sctx), max_steps=item["max_steps"], record_obs_every=every)
            tt = rollout(env, pol, s, apply_overrides(b, iv.treatment, sctx), max_steps=item["max_steps"], record_obs_every=every)
            m = pair_metrics(tc, tt, brake_threshold=float(item.get("brake_threshold", 0.1)))
            m["seed"] = s
            out["metrics"] = m
            if item.get("keep_obs"):
                out["pair"] = (tc, tt)
    elif kind == "but_for":
        (row,) = but_for(lambda: make_env(env_id, cfg), pol, [item["traj"]], float(item["branch_s"]),
                         float(item["post_s"]), reference=scripted_policy(env_id), max_episodes=1)
        out = {"row": row}
    else:
        raise ValueError(f"unknown episode job kind {kind!r}")
    out["seconds"] = time.perf_counter() - t0
    return out


def _remote_policy(policy: Any, pol: Any, spec: PolicySpec | None) -> tuple:
    """The description a Ray worker rebuilds the policy from: its :class:`PolicySpec`, else the pickled
    policy (cloudpickle). Raises ValueError when neither exists."""
    if spec is not None:
        return ("spec", spec)
    from ray import cloudpickle

    try:
        blob = cloudpickle.dumps(pol)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means: serial only
        raise ValueError(
            f"--ray / ray=True: the policy {getattr(pol, 'name', type(policy).__name__)!r} cannot be sent to Ray workers "
            f"({type(exc).__name__}: {exc}). Give a description the workers can rebuild it from -- --run RUN_DIR, "
            "--model PATH, --policy scripted, or kai_drive.evaluation.PolicySpec(...) in the library API -- or a "
            "picklable callable; or evaluate serially (without --ray)."
        ) from None
    import hashlib

    return ("pickle", hashlib.sha1(blob).hexdigest(), blob)


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


def _thresholds_for(thresholds: dict | None, task: str) -> tuple[dict, list[dict]]:
    """``(applicable, skipped)``: a suite's ``thresholds`` are flat (``{path: cond}``) and/or scoped by task
    (``{driving: {path: cond}, grasp: {path: cond}}``). A flat ``safety.<metric>`` path whose metric only
    the other task has is not applicable (reported, never failing); any other unknown path fails."""
    flat, skipped = {}, []
    other = "driving" if task == "grasp" else "grasp"
    mine, theirs = task_metrics(task), task_metrics(other)
    for k, v in (thresholds or {}).items():
        if k in ("driving", "grasp") and isinstance(v, dict):
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
    S = load_suite(suite)
    is_grasp = "grasp" in env_id.lower()
    task = "grasp" if is_grasp else "driving"
    spec: PolicySpec | None = None
    if isinstance(policy, str):
        if policy not in ("scripted", *BASELINES):
            raise ValueError(f"policy {policy!r}: the built-in policies are 'scripted', "
                             f"{', '.join(repr(b) for b in BASELINES)} (or pass a model / callable)")
        spec = PolicySpec(policy, env_id, task=task)
        pol = spec.build()
    elif isinstance(policy, PolicySpec):
        spec = PolicySpec(policy.kind, env_id, task=task) if policy.kind in ("scripted", *BASELINES) else policy
        pol = spec.build()
    else:
        pol = as_policy(policy)
        spec = next((x for x in (getattr(pol, "spec", None), getattr(policy, "spec", None)) if isinstance(x, PolicySpec)), None)
    reads_obs = not (spec is not None and spec.kind in ("scripted", *BASELINES))
    # env config: the suite's defaults for the task < the policy's own (a run's test config) < the caller's
    cfg = dict(getattr(pol, "env_config", {}) or {})
    cfg.update(env_config or {})
    for k, v in ((S.get("env_config") or {}).get(task) or {}).items():
        if not _has_key(cfg, k):
            cfg[k] = v
    if not reads_obs:  # privileged scripted policy / trivial baseline: sensors only cost time
        for k in ("sensors.camera.enabled", "sensors.lidar.enabled"):
            if not _has_key(cfg, k):
                cfg[k] = False
    bl_cfg = S.get("baselines", True)
    if baselines is False or bl_cfg is False:
        bl_names: list[str] = []
    elif isinstance(bl_cfg, dict) and task in bl_cfg:
        bl_names = list(bl_cfg[task])
    else:
        bl_names = default_baselines(task)
    bl_names = [b for b in bl_names if not (spec is not None and spec.kind == b)]  # the policy itself is a row already
    baseline_runs = {b: PolicySpec(b, env_id, task=task) for b in bl_names}
    bl_env = {**cfg, "sensors.camera.enabled": False, "sensors.lidar.enabled": False}  # they read nothing
    mk = lambda: make_env(env_id, cfg)  # noqa: E731
    base = int(S.get("seed_base", 2**30 + 2**29))
    n_safe = int(episodes or seeds or S.get("seeds", 10))
    safety_seeds = [base + i for i in range(n_safe)]
    R, C, A = S.get("robustness") or {}, S.get("causal") or {}, S.get("attribution") or {}
    n_rob = int(seeds or R.get("seeds", 10))
    n_cau = int(seeds or C.get("seeds", 10))
    DrivingMetricConfig.from_dict(S.get("safety"))  # validate before any episode runs
    log = log or (lambda m: None)

    remote = None
    if ray:
        from kai_drive.distributed import require_ray

        require_ray("kai_drive.evaluate --ray")
        remote = _remote_policy(policy, pol, spec)  # fail before starting Ray

    probe = mk()
    obs_keys = sorted(probe.observation_space.spaces) if hasattr(probe.observation_space, "spaces") else []
    dt = 1.0 / float(probe.metadata.get("render_fps", 20))
    renderer = getattr(probe.unwrapped, "renderer", None) or probe.metadata.get("renderer")  # "tiny" / "egl" / "opengl"
    probe.close()

    conds = dict(R.get("conditions") or {}) if "robustness" in sections else {}
    ivs = [Intervention.from_dict(k, v) for k, v in (C.get("interventions") or {}).items()] if "causal" in sections else []
    result: dict[str, Any] = {
        "schema": SCHEMA, "env_id": env_id, "env_alias": alias, "policy": pol.name, "suite": S.get("name"),
        "suite_config": S, "env_config": cfg, "renderer": renderer, "observation_keys": obs_keys, "dt_s": dt,
        "seeds": {"safety": safety_seeds}, "wall_s": {}, "notes": [],
    }
    t_all = time.perf_counter()
    token = None
    if ray:
        import ray as _ray

        from kai_drive.distributed.cluster import ray_session, resolve_address

        where = "the Ray already initialised in this process" if _ray.is_initialized() else (resolve_address(address) or "local")
        session: Any = ray_session(address, num_cpus=num_cpus, what="kai_drive.evaluate --ray")
    else:
        session = contextlib.nullcontext({})
    try:
        with session as resources:
            if ray:
                if remote[0] == "pickle" and len(remote[2]) > 100_000:  # ship a large policy once
                    remote = (remote[0], remote[1], _ray.put(remote[2]))
                result["execution"] = {"backend": "ray", "address": where,
                                       "cluster_cpus": float(resources.get("CPU", 0.0)), "policy_from": remote[0]}
                pdesc = remote
            else:
                token = f"{id(pol)}:{time.perf_counter_ns()}"
                _LOCAL_POLICIES[token] = pol
                pdesc = ("local", token)
                result["execution"] = {"backend": "serial"}
            _run_suite(result, S, pol, pdesc, env_id, task, cfg, dt, obs_keys, reads_obs, safety_seeds, n_rob,
                       n_cau, conds, ivs, R, C, A, sections, progress, log, bool(ray),
                       {b: ("spec", sp) for b, sp in baseline_runs.items()}, bl_env)
    finally:
        if token is not None:
            _LOCAL_POLICIES.pop(token, None)
            _close_envs()
    result["wall_s"]["total"] = time.perf_counter() - t_all

    applicable, skipped = _thresholds_for(S.get("thresholds"), task)
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
    result["_policy"] = pol  # not serialised; the report's videos re-run it
    return result


def _run_suite(result, S, pol, pdesc, env_id, task, cfg, dt, obs_keys, reads_obs, safety_seeds, n_rob, n_cau,
               conds, ivs, R, C, A, sections, progress, log, use_ray, baseline_descs=None, baseline_env=None) -> None:
    is_grasp = task == "grasp"
    metric_fn = grasp_metrics if is_grasp else driving_metrics
    mcfg = DrivingMetricConfig.from_dict(S.get("safety"))
    rate_keys = _GRASP_RATE_KEYS if is_grasp else _RATE_KEYS
    ctx = {"env_id": env_id, "env_config": cfg, "policy": pdesc, "task": task, "safety": S.get("safety")}
    bar = _Progress(0, progress)

    def run_jobs(jobs: list[dict]) -> list[dict]:
        if not jobs:
            return []
        bar.add(len(jobs))
        if use_ray:
            from kai_drive.distributed.episodes import map_episodes

            start = bar.n
            return map_episodes(_episode_job, jobs, progress=lambda done, total: bar.to(start + done))
        out = []
        for j in jobs:
            out.append(_episode_job(j))
            bar()
        return out

    # -- the episodes: safety, robustness conditions and paired interventions in one batch ---------------
    n_safe = len(safety_seeds)
    max_steps = int(S["max_episode_s"] / dt) if S.get("max_episode_s") else None
    mod = C.get("modality") or {}
    obs_budget = int(mod.get("max_obs", 200))
    every = max(1, int(round(0.5 / dt)))
    jobs = [{"ctx": ctx, "kind": "safety", "seed": s, "max_steps": max_steps,
             "record_obs_every": every if reads_obs and obs_budget > 0 else 0} for s in safety_seeds]
    for b, desc in (baseline_descs or {}).items():  # trivial baselines on the same safety seeds (they read nothing)
        bctx = {**ctx, "policy": desc, "env_config": baseline_env if baseline_env is not None else cfg}
        jobs += [{"ctx": bctx, "kind": "baseline", "name": b, "seed": s, "max_steps": max_steps, "record_obs_every": 0}
                 for s in safety_seeds]
    rob_seeds = safety_seeds[:n_rob]
    rob_horizon = int(float(R.get("max_s", 20)) / dt)
    notes: dict[str, str] = {}
    for name, c in conds.items():
        note = None
        need = c.get("needs")
        if "scenario" in c and is_grasp:
            note = "skipped: the grasp env has no scenario factors (light, colours) settable through reset options"
        elif need and need not in obs_keys:
            note = f"skipped: the policy has no {need} observation"
        elif not reads_obs and ("transform" in c or "attack" in c):
            note = "skipped: the policy does not read observations (privileged scripted / trivial baseline)"
        elif "attack" in c and not getattr(pol, "differentiable", False):
            note = "skipped: the policy is not differentiable (attacks need an SB3 torch policy)"
        if note is not None:
            notes[name] = note
            continue
        jobs += [{"ctx": ctx, "kind": "robustness", "name": name, "condition": c, "seed": s, "max_steps": rob_horizon}
                 for s in rob_seeds]
    run_causal = "causal" in sections and bool(ivs) and not is_grasp
    cau_seeds = safety_seeds[:n_cau]
    cau_horizon = int(float(C.get("horizon_s", 10)) / dt)
    n_attr = int(A.get("seeds", 3)) if "attribution" in sections and getattr(pol, "differentiable", False) else 0
    if run_causal:
        raw = C.get("interventions") or {}
        jobs += [{"ctx": ctx, "kind": "pair", "name": iv.name, "intervention": raw[iv.name], "seed": s,
                  "max_steps": cau_horizon, "keep_obs": i < n_attr} for iv in ivs for i, s in enumerate(cau_seeds)]
    bar.set("episodes")
    t0 = time.perf_counter()
    done = run_jobs(jobs)
    result["wall_s"]["episodes"] = time.perf_counter() - t0
    busy = " of worker time" if use_ray else ""
    if use_ray:
        log(f"episodes: {len(jobs)} jobs on Ray in {result['wall_s']['episodes']:.1f} s")
    by_kind: dict[str, list[dict]] = {"safety": [], "baseline": [], "robustness": [], "pair": []}
    for j, r in zip(jobs, done):
        by_kind[j["kind"]].append(r)

    # -- safety ------------------------------------------------------------------------------------
    trajs: list[Trajectory] = [r["traj"] for r in by_kind["safety"]]
    per_ep = [r["metrics"] for r in by_kind["safety"]]
    result["safety"] = {"per_episode": per_ep, "summary": _aggregate(per_ep, rate_keys),
                        "outcomes": {o: sum(e["outcome"] == o for e in per_ep) for o in sorted({e["outcome"] for e in per_ep})}}
    result["wall_s"]["safety"] = sum((r["seconds"] for r in by_kind["safety"]), 0.0)
    log(f"safety: {n_safe} episodes in {result['wall_s']['safety']:.1f} s{busy}")

    # -- baselines (same seeds) ----------------------------------------------------------------------
    if baseline_descs:
        it = iter(by_kind["baseline"])
        bls: dict[str, Any] = {}
        for b, desc in baseline_descs.items():
            per_b = [next(it)["metrics"] for _ in safety_seeds]
            bls[b] = {"policy": _policy_of(desc).name, "summary": _aggregate(per_b, rate_keys),
                      "outcomes": {o: sum(e["outcome"] == o for e in per_b) for o in sorted({e["outcome"] for e in per_b})},
                      "per_episode": per_b}
        result["baselines"] = bls
        result["wall_s"]["baselines"] = sum((r["seconds"] for r in by_kind["baseline"]), 0.0)
        log(f"baselines: {', '.join(baseline_descs)} on the same {n_safe} seeds in {result['wall_s']['baselines']:.1f} s{busy}")

    # -- robustness --------------------------------------------------------------------------------
    if conds:
        clean = []
        for tr in trajs[:n_rob]:
            m = metric_fn(tr.infos[:rob_horizon], tr.dt, mcfg)
            m["seed"] = tr.seed
            clean.append(m)
        rob: dict[str, Any] = {"clean": {"summary": _aggregate(clean, rate_keys)}, "horizon_s": rob_horizon * dt}
        dm = GRASP_DROP_METRICS if is_grasp else DROP_METRICS
        it = iter(by_kind["robustness"])
        for name in conds:
            if name in notes:
                rob[name] = {"note": notes[name]}
                continue
            res = [next(it)["metrics"] for _ in rob_seeds]
            rob[name] = {"summary": _aggregate(res, rate_keys), "drop": drops(clean, res, dm), "per_episode": res}
        result["robustness"] = rob
        result["wall_s"]["robustness"] = sum((r["seconds"] for r in by_kind["robustness"]), 0.0)
        log(f"robustness: {len(conds)} conditions in {result['wall_s']['robustness']:.1f} s{busy}")

    # -- causal ------------------------------------------------------------------------------------
    if run_causal:
        t0 = time.perf_counter()
        bar.set("causal")
        inter: dict[str, Any] = {}
        pairs_of: dict[str, list] = {}
        it = iter(by_kind["pair"])
        for iv in ivs:
            rows = [next(it) for _ in cau_seeds]
            inter[iv.name] = _intervention_result(iv, [r["metrics"] for r in rows if r["applies"]],
                                                  sum(not r["applies"] for r in rows), float(C.get("min_action_effect", 0.02)))
            pairs_of[iv.name] = [r["pair"] for r in rows if r["applies"] and "pair" in r]
        causal: dict[str, Any] = {"horizon_s": cau_horizon * dt, "interventions": inter}
        causal["modality"] = _modality(pol, trajs, obs_keys, reads_obs, obs_budget, result.get("robustness", {}), "driving_score")
        # but-for attribution of failures: one job per failed episode (its trajectory, without observations)
        bf = C.get("but_for") or {}
        fails = [tr for tr in trajs if episode_outcome(tr).startswith("collision") or episode_outcome(tr) in ("off_road", "lane_invasion")]
        bf_jobs = [{"ctx": ctx, "kind": "but_for", "traj": dc_replace(tr, obs={}, frames=[]),
                    "branch_s": float(bf.get("branch_s", 1.5)), "post_s": float(bf.get("post_s", 3.0))}
                   for tr in fails[:int(bf.get("max_episodes", 3))]]
        t_bf = time.perf_counter()
        bf_done = run_jobs(bf_jobs)
        causal["but_for"] = [r["row"] for r in bf_done]
        causal["failed_episodes"] = len(fails)
        result["causal"] = causal
        result["wall_s"]["causal"] = (sum(r["seconds"] for r in by_kind["pair"]) + sum(r["seconds"] for r in bf_done)
                                      + (t_bf - t0))
        log(f"causal: {len(ivs)} interventions x {n_cau} seeds in {result['wall_s']['causal']:.1f} s{busy}")

        # -- attribution (captum), in this process on the pairs the causal jobs kept ---------------------
        if n_attr > 0:
            t0 = time.perf_counter()
            bar.set("attribution")
            from kai_drive.evaluation.attribution import intervention_agreement

            result["attribution"] = {iv.name: intervention_agreement(pol, pairs_of[iv.name], n_steps=int(A.get("n_steps", 16)))
                                     for iv in ivs if inter[iv.name].get("n")}
            result["wall_s"]["attribution"] = time.perf_counter() - t0
        elif "attribution" in sections:
            result["attribution"] = {"note": "skipped: the policy is not differentiable (captum needs an SB3 torch policy)"}
    elif is_grasp and "causal" in sections:
        if ivs:
            result["notes"].append("causal interventions and but-for attribution skipped: the grasp env has no scenario "
                                   "factors to intervene on (its reset takes no scenario options)")
        if reads_obs:  # what removing each sensor changes in the decision applies to any env
            result["causal"] = {"modality": _modality(pol, trajs, obs_keys, reads_obs, obs_budget,
                                                      result.get("robustness", {}), "success")}
    bar.close()
    result["_trajectories"] = trajs  # not serialised; used for videos


def _modality(pol, trajs, obs_keys, reads_obs, obs_budget, rob, outcome_key) -> dict:
    """Modality reliance: action change at matched states + the outcome change from robustness."""
    if not reads_obs:
        return {"note": "skipped: the policy does not read observations (privileged scripted / trivial baseline)"}
    obs_list = [o for tr in trajs for o in tr.obs.values()][:obs_budget]
    specs = {"camera": {"camera": "black"}, "lidar": {"lidar": "missing"}, "depth": {"depth": "zero"},
             "state": {"state": "zero"}}
    removals = {k: sensor_transform(v, 0) for k, v in specs.items() if k in obs_keys}
    rm = {k: (lambda o, f=f: f(o, 0)) for k, f in removals.items()}
    sens = action_sensitivity(pol, obs_list, rm)
    cond_of = {"camera": "camera_black", "lidar": "lidar_missing"}
    return {k: {"action_change": v, "outcome_drop": (rob.get(cond_of.get(k, ""), {}).get("drop") or {}).get(outcome_key)}
            for k, v in sens.items()}


def _intervention_result(iv: Intervention, per_seed: list[dict], skipped: int, min_action_effect: float) -> dict:
    """Aggregate one intervention's paired seeds (as :func:`causal.run_interventions` does)."""
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
