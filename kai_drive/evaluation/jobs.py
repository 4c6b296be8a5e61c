"""Episode jobs: every episode of an evaluation is ``episode_job(item)``, a module-level function of a
picklable item that names everything the episode depends on (env id and config, a policy *description*,
the seed, the perturbation). :func:`run_jobs` runs them in order in this process or, with Ray, maps the
same jobs over workers (kai_drive.distributed.map_episodes) that rebuild the env and the policy (from a
:class:`PolicySpec`). kai-drive envs draw all randomness from the seed given to reset (and reset rebuilds
the world), so a job gives the same bytes wherever it runs (tests/test_evaluate_ray.py).

Job kinds (``item["kind"]``): ``safety`` (a clean episode: metrics and the trajectory), ``baseline`` (a
clean episode of a trivial baseline: metrics), ``robustness`` (one condition on one seed: metrics),
``pair`` (one intervention's control and treatment arms on one seed: paired metrics, and the two
trajectories with observations when ``keep_obs``), ``but_for`` (the but-for replays of one failed
trajectory). ``item["ctx"]``: ``env_id``, ``env_config``, ``policy`` (a description, :func:`policy_of`),
``task`` (the family name) and ``safety`` (the suite's metric settings).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kai_drive.evaluation.baselines import BASELINES, baseline_policy
from kai_drive.evaluation.causal import Intervention, but_for, pair_metrics
from kai_drive.evaluation.adapters import as_policy, scripted_policy
from kai_drive.evaluation.robustness import AdversarialPolicy
from kai_drive.evaluation.rollout import apply_overrides, make_env, reset_options, rollout, scenario_context, sensor_transform
from kai_drive.metrics import FAMILIES, DrivingMetricConfig

__all__ = ["PolicySpec", "episode_job", "run_jobs", "remote_policy", "policy_of", "Progress"]


@dataclass(frozen=True)
class PolicySpec:
    """A policy described by what rebuilds it in another process (a Ray worker).

    ``kind``: ``scripted`` (the privileged expert of ``env_id``), ``stop`` / ``constant`` (the trivial
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
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("scripted", "run", "model", "pretrained", *BASELINES):
            raise ValueError(f"PolicySpec.kind must be 'scripted', {', '.join(repr(b) for b in BASELINES)}, 'run', "
                             f"'model' or 'pretrained', got {self.kind!r}")
        if self.kind in ("run", "model") and not self.path:
            raise ValueError(f"PolicySpec({self.kind!r}) needs a path")
        if self.kind == "pretrained":
            if not self.name:
                raise ValueError("PolicySpec('pretrained') needs a name (kai_drive.pretrained.available())")
            if self.name.endswith(".json"):  # an exported agent's file: absolute, like every path here
                object.__setattr__(self, "name", str(Path(self.name).expanduser().resolve()))
        if self.path:
            object.__setattr__(self, "path", str(Path(self.path).expanduser().resolve()))
        if self.vecnormalize:
            object.__setattr__(self, "vecnormalize", str(Path(self.vecnormalize).expanduser().resolve()))

    @property
    def reads_obs(self) -> bool:
        """False for the privileged scripted expert and the trivial baselines (they read no observation)."""
        return self.kind not in ("scripted", *BASELINES)

    def build(self) -> Any:
        """The :class:`~kai_drive.evaluation.adapters.EvalPolicy` (with ``.spec`` = this spec)."""
        from kai_drive.evaluation.adapters import load_model, load_run

        if self.kind == "scripted":
            return scripted_policy(self.env_id)
        if self.kind in BASELINES:
            pol = baseline_policy(self.kind, self.task)
            pol.spec = self
            return pol
        if self.kind == "run":
            pol, _ = load_run(self.path, self.checkpoint)
        elif self.kind == "pretrained":
            from kai_drive.pretrained import load

            pol = load(self.name)
        else:
            pol = load_model(self.path, self.algo, self.vecnormalize)
        pol.spec = self
        return pol


LOCAL_POLICIES: dict[str, Any] = {}  # serial runs: token -> the caller's policy object (never pickled)
_WORKER_POLICIES: dict[Any, Any] = {}  # per process: spec / pickle digest -> rebuilt policy
_WORKER_ENVS: OrderedDict[tuple, Any] = OrderedDict()  # per process: (env_id, config) -> env (reset rebuilds it)


def policy_of(desc: tuple) -> Any:
    """The policy a job's description names: ``("local", token)`` (this process), ``("spec", PolicySpec)``
    or ``("pickle", digest, bytes or a Ray ObjectRef)``; rebuilt policies are cached per process."""
    kind = desc[0]
    if kind == "local":
        return LOCAL_POLICIES[desc[1]]
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


def worker_env(env_id: str, cfg: dict) -> Any:
    """The env this process keeps for ``(env_id, cfg)`` between jobs (built on first use; the two most recent
    are kept, the older closed); :func:`close_envs` closes them."""
    key = (env_id, json.dumps(cfg, sort_keys=True, default=str))
    env = _WORKER_ENVS.pop(key, None)
    if env is None:
        env = make_env(env_id, cfg)
    _WORKER_ENVS[key] = env
    while len(_WORKER_ENVS) > 2:
        _, old = _WORKER_ENVS.popitem(last=False)
        old.close()
    return env


def close_envs() -> None:
    """Close the envs this process keeps between jobs."""
    while _WORKER_ENVS:
        _, env = _WORKER_ENVS.popitem()
        env.close()


def _metrics(ctx: dict, tr: Any, infos: list | None = None) -> dict:
    """The family's per-episode metrics of a trajectory (``infos``: a prefix of its step infos)."""
    fam = FAMILIES[ctx["task"]]
    return fam.episode_metrics(tr.infos if infos is None else infos, tr.dt, DrivingMetricConfig.from_dict(ctx.get("safety")))


def _clean_job(item: dict, pol: Any) -> dict:
    """``safety`` / ``baseline``: a clean episode; metrics with its outcome (and the trajectory for safety)."""
    ctx, s = item["ctx"], int(item["seed"])
    tr = rollout(worker_env(ctx["env_id"], ctx["env_config"]), pol, s, max_steps=item["max_steps"],
                 record_obs_every=item["record_obs_every"])
    m = _metrics(ctx, tr)
    m["seed"], m["outcome"] = s, tr.outcome
    return {"metrics": m, "traj": tr} if item["kind"] == "safety" else {"metrics": m}


def _robustness_job(item: dict, pol: Any) -> dict:
    """One condition on one seed: an attack wraps the policy (its random start seeded by the episode, not by
    the job order), a transform corrupts observations, a scenario sets factors through reset options."""
    ctx, s, c = item["ctx"], int(item["seed"]), item["condition"]
    env = worker_env(ctx["env_id"], ctx["env_config"])
    p_use, transform, scen = pol, None, None
    if "attack" in c:
        a = c["attack"]
        p_use = AdversarialPolicy(pol, a.get("eps", {}), a.get("method", "pgd"), int(a.get("steps", 3)), seed=s)
    if "transform" in c:
        transform = sensor_transform(c["transform"], s)
    if "scenario" in c:
        _, info = env.reset(seed=s, options=reset_options(s))
        scen = apply_overrides(info["scenario"], c["scenario"], {"start_s_m": 0.0, "ego_lane_d_m": 0.0})
    tr = rollout(env, p_use, s, scen, obs_transform=transform, max_steps=item["max_steps"])
    m = _metrics(ctx, tr)
    m["seed"] = s
    return {"metrics": m}


def _pair_job(item: dict, pol: Any) -> dict:
    """One intervention on one seed: control and treatment arms from the same realised scenario."""
    ctx, s = item["ctx"], int(item["seed"])
    iv = Intervention.from_dict(item["name"], item["intervention"])
    env = worker_env(ctx["env_id"], ctx["env_config"])
    _, info = env.reset(seed=s, options=reset_options(s))
    rec = info.get("scenario", {})
    out: dict[str, Any] = {"applies": iv.applies(rec)}
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
    return out


def _but_for_job(item: dict, pol: Any) -> dict:
    env_id, cfg = item["ctx"]["env_id"], item["ctx"]["env_config"]
    (row,) = but_for(lambda: make_env(env_id, cfg), pol, [item["traj"]], float(item["branch_s"]),
                     float(item["post_s"]), reference=scripted_policy(env_id), max_episodes=1)
    return {"row": row}


_JOBS: dict[str, Callable[[dict, Any], dict]] = {
    "safety": _clean_job, "baseline": _clean_job, "robustness": _robustness_job, "pair": _pair_job,
    "but_for": _but_for_job}


def episode_job(item: dict) -> dict:
    """One episode (or one paired / but-for replay) of an evaluation; depends only on ``item`` (see the
    module docstring). Adds ``seconds``, the job's wall time."""
    t0 = time.perf_counter()
    job = _JOBS.get(item["kind"])
    if job is None:
        raise ValueError(f"unknown episode job kind {item['kind']!r}")
    out = job(item, policy_of(item["ctx"]["policy"]))
    out["seconds"] = time.perf_counter() - t0
    return out


def remote_policy(policy: Any, pol: Any, spec: PolicySpec | None) -> tuple:
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


class Progress:
    """A tqdm bar over episodes (nothing when disabled); its total grows as job batches are added."""

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


def run_jobs(jobs: list[dict], bar: Progress, use_ray: bool) -> list[dict]:
    """The results of ``jobs`` in order: in this process, or as Ray tasks (``use_ray``)."""
    if not jobs:
        return []
    bar.add(len(jobs))
    if use_ray:
        from kai_drive.distributed.episodes import map_episodes

        start = bar.n
        return map_episodes(episode_job, jobs, progress=lambda done, total: bar.to(start + done))
    out = []
    for j in jobs:
        out.append(episode_job(j))
        bar()
    return out
