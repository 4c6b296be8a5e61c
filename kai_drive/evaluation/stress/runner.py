"""``stress_test(policy, env_id, ...)``: search an env's scenario space for failures of a policy, analyse them,
and (with :func:`~kai_drive.evaluation.stress.report.write_stress_outputs`) write records, figures and a report.

Policies are what ``evaluate`` takes for driving: ``"scripted"``, ``"stop"``, ``"constant"``, a
:class:`~kai_drive.evaluation.jobs.PolicySpec` (``--run``), or any callable ``obs -> action`` (serial only).
Episodes run in this process or, with ``ray=True``, as Ray tasks (:func:`kai_drive.distributed.map_episodes`,
one local instance for the whole search); each episode depends only on its item, so both give the same result.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import numpy as np

from kai_drive.evaluation.adapters import as_policy
from kai_drive.evaluation.baselines import BASELINES
from kai_drive.evaluation.jobs import LOCAL_POLICIES, PolicySpec, close_envs
from kai_drive.evaluation.rollout import make_env, rollout
from kai_drive.evaluation.stress.analysis import distinct_failures, failure_modes, influence, smallest_changes
from kai_drive.evaluation.stress.search import SearchConfig, cem_search, stress_episode
from kai_drive.evaluation.stress.space import factor_space
from kai_drive.metrics import family_of

__all__ = ["stress_test", "resolve_policy"]

SCHEMA = "kai-drive-stress/1"


def resolve_policy(policy: Any, env_id: str) -> tuple[tuple, Any, bool]:
    """``(job description, policy object, reads observations)`` of what ``stress_test`` accepts."""
    if isinstance(policy, str):
        if policy not in ("scripted", *BASELINES):
            raise ValueError(f"policy {policy!r}: built-in policies are 'scripted', 'stop', 'constant'")
        policy = PolicySpec(policy, env_id, task="driving")
    if isinstance(policy, PolicySpec):
        return ("spec", policy), policy.build(), policy.reads_obs
    pol = as_policy(policy)
    spec = getattr(pol, "spec", None)
    if isinstance(spec, PolicySpec):
        return ("spec", spec), pol, spec.reads_obs
    token = f"stress-{id(pol)}"
    LOCAL_POLICIES[token] = pol
    return ("local", token), pol, True


def _runner(use_ray: bool) -> Callable[[list[dict]], list[dict]]:
    if not use_ray:
        return lambda items: [stress_episode(i) for i in items]
    from kai_drive.distributed.episodes import map_episodes

    return lambda items: map_episodes(stress_episode, items)


def stress_test(  # long: one run from its inputs to the analysed result, in order
    policy: Any,
    env_id: str,
    config: SearchConfig,
    env_config: dict | None = None,
    factors: list[str] | None = None,
    ray: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    max_modes: int = 3,
    bisect: int = 3,
    but_for_causes: bool = True,
    max_seconds: float | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Search ``env_id`` for failures of ``policy`` (see the package docstring); returns the result dict
    (``schema`` kai-drive-stress/1; private keys ``_search``, ``_policy``, ``_desc`` for the writer)."""
    config.check()
    t0 = time.perf_counter()
    from kai_drive.catalog import resolve_env

    env_id, alias = resolve_env(env_id)
    desc, pol, reads_obs = resolve_policy(policy, env_id)
    cfg = dict(getattr(pol, "env_config", {}) or {})
    cfg.update(env_config or {})
    if not reads_obs:  # a privileged / trivial policy: sensors only cost time
        cfg.setdefault("sensors.camera.enabled", False)
        cfg.setdefault("sensors.lidar.enabled", False)
    probe = make_env(env_id, cfg)
    try:
        if family_of(probe).name != "driving":
            raise ValueError(f"{env_id}: stress testing searches driving scenario factors; this env has none")
        space = factor_space(probe, factors)
        dt = 1.0 / float(probe.metadata.get("render_fps", 20))
    finally:
        probe.close()
    if max_seconds is not None:
        config.max_steps = int(round(float(max_seconds) / dt))
    if ray and desc[0] == "local":
        raise ValueError("ray=True needs a policy Ray workers can rebuild: 'scripted', 'stop', 'constant' or a "
                         "PolicySpec (--run); run a callable serially")

    def item(seed: int, x: np.ndarray | None = None, record: dict | None = None) -> dict:
        it = {"env_id": env_id, "env_config": cfg, "policy": desc, "seed": int(seed), "max_steps": config.max_steps,
              "severity": config.severity}
        if record is not None:
            it["record"] = record
        else:
            it.update({"space": space, "x": [float(v) for v in x]})
        return it

    session = contextlib.nullcontext()
    if ray:
        from kai_drive.distributed.cluster import ray_session

        session = ray_session(address, num_cpus=num_cpus, what="python -m kai_drive.stress --ray")
    with session:
        run = _runner(ray)
        log(f"searching {len(space.names)} factors of {env_id}: {', '.join(space.names)}")
        found = cem_search(space, run, lambda s, x: item(s, x), config, log=log)
        res = _analyse(found, space, run, lambda s, rec: item(s, record=rec), config, max_modes, bisect, log)
    if but_for_causes:
        _but_for(res, found, env_id, cfg, pol, config.max_steps)
    close_envs()
    res.update({"schema": SCHEMA, "env_id": env_id, "env_alias": alias, "policy": getattr(pol, "name", str(policy)),
                "env_config": cfg, "dt_s": dt, "config": dict(vars(config)), "factors": [vars(f) for f in space.factors],
                "execution": {"backend": "ray" if ray else "serial"}, "_search": found, "_policy": pol,
                "_make_env": lambda: make_env(env_id, cfg)})
    res["wall_s"] = {"search": found.wall_s, "total": time.perf_counter() - t0}
    return res


def _analyse(found: Any, space: Any, run: Callable, replay_item: Callable, config: SearchConfig, max_modes: int,
             bisect: int, log: Callable[[str], None]) -> dict[str, Any]:  # long: one section per finding
    """Failures, distinct ones, influence, modes, and per mode: replay check and smallest change."""
    eps = found.episodes
    u_all = space.quantiles(found.z) if len(eps) else np.zeros((0, space.dim))
    sev = np.asarray([e["severity"] for e in eps], float)
    fail_idx = [i for i, e in enumerate(eps) if e["failed"]]
    search_idx = [i for i in fail_idx if found.phase[i] == "search"]
    infl = influence(u_all, sev)
    order = np.argsort(-infl)
    loglik = space.log_likelihood(found.z) if len(eps) else np.zeros(0)
    labels = failure_modes(u_all[fail_idx], [eps[i]["outcome"] for i in fail_idx], order) if fail_idx else []
    distinct = [fail_idx[j] for j in distinct_failures(u_all[fail_idx])] if fail_idx else []
    failures = [{"index": i, "seed": eps[i]["seed"], "outcome": eps[i]["outcome"], "mode": int(m),
                 "log_likelihood": float(loglik[i]), "severity": float(sev[i]), "phase": found.phase[i],
                 "factors": dict(zip(space.names, space.to_x(found.z[i]).tolist())),
                 "distinct": i in distinct} for i, m in zip(fail_idx, labels)]
    modes = []
    for m in sorted(set(labels)):
        members = [f for f in failures if f["mode"] == m]
        rep = max(members, key=lambda f: f["log_likelihood"])
        row: dict[str, Any] = {"mode": m, "size": len(members), "outcome": rep["outcome"], "representative": rep["index"],
                               "representative_seed": rep["seed"], "log_likelihood": rep["log_likelihood"],
                               "factors": rep["factors"]}
        if m < max_modes:
            record = eps[rep["index"]]["record"]
            (again,) = run([replay_item(rep["seed"], record)])
            row["replay"] = {"outcome": again["outcome"], "steps": again["steps"],
                             "same": again["outcome"] == rep["outcome"] and again["steps"] == eps[rep["index"]]["steps"]}
            log(f"mode {m} ({len(members)} failures, {rep['outcome']}): replay {'identical' if row['replay']['same'] else 'DIFFERS'}; "
                "searching the smallest single-factor change")
            row["smallest_change"] = smallest_changes(space, record, rep["seed"], run, replay_item, bisect)
        modes.append(row)
    n = len(eps)
    n_search = sum(p == "search" for p in found.phase)
    return {
        "episodes": n, "search_episodes": n_search, "failures": len(fail_idx), "search_failures": len(search_idx),
        "distinct_failures": len(distinct),
        "distinct_search_failures": sum(1 for i in distinct if found.phase[i] == "search"),
        "distinct_failures_per_100": 100.0 * len(distinct) / n if n else 0.0,
        "outcomes": {o: sum(e["outcome"] == o for e in eps) for o in sorted({e["outcome"] for e in eps})},
        "influence": dict(zip(space.names, infl.tolist())), "most_influential": [space.names[i] for i in order[:2]],
        "modes": modes, "failure_list": failures, "rounds": found.rounds, "estimate": found.estimate,
    }


def _but_for(res: dict, found: Any, env_id: str, cfg: dict, pol: Any, max_steps: int | None) -> None:
    """The evaluator's but-for attribution (kai_drive.evaluation.causal.but_for) on each analysed mode's
    representative: which removed actor, or which driver taking over 1.5 s before, averts the failure."""
    from kai_drive.evaluation.adapters import scripted_policy
    from kai_drive.evaluation.causal import but_for

    env = None
    for row in res["modes"]:
        if "replay" not in row:
            continue
        env = env or make_env(env_id, cfg)
        ep = found.episodes[row["representative"]]
        tr = rollout(env, pol, ep["seed"], ep["record"], max_steps=max_steps)
        (bf,) = but_for(lambda: make_env(env_id, cfg), pol, [tr], 1.5, 3.0, reference=scripted_policy(env_id),
                        max_episodes=1)
        row["but_for"] = {"causes": bf["causes"], "but_for_causes": bf["but_for_causes"]}
    if env is not None:
        env.close()


def replay_failure(path: str, policy: Any, env_config: dict | None = None) -> dict[str, Any]:
    """Replay a failure file written by a stress test (``failures/*.json``) with ``policy`` (as ``stress_test``
    takes it): the episode's ``outcome`` and ``steps`` now, the recorded ``expected`` outcome and ``same``."""
    import json

    doc = json.loads(open(path).read())
    desc, _, _ = resolve_policy(policy, doc["env_id"])
    cfg = dict(doc.get("env_config") or {})
    cfg.update(env_config or {})
    rec = doc["scenario"]
    try:
        r = stress_episode({"env_id": doc["env_id"], "env_config": cfg, "policy": desc, "seed": rec["road_seed"],
                            "record": rec, "max_steps": doc.get("max_steps")})
    finally:
        close_envs()
    return {"outcome": r["outcome"], "steps": r["steps"], "expected": doc["outcome"],
            "expected_steps": doc.get("steps"), "same": r["outcome"] == doc["outcome"]
            and (doc.get("steps") is None or r["steps"] == doc["steps"])}
