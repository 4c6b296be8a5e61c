"""The search: the cross-entropy method over latent scenario factors, and the importance-sampling estimate.

**Episodes.** One episode is :func:`stress_episode` of a picklable item (env id and config, a policy
description as :mod:`kai_drive.evaluation.jobs` uses, the road seed, the factor values): it realises the
seed's scenario, sets the factors, rolls the policy out (:func:`kai_drive.evaluation.rollout.rollout`) and
returns the realised record, the outcome (:func:`kai_drive.metrics.episode_outcome`), the family's metrics
and the **severity**: 1 for a failure (:func:`kai_drive.metrics.is_failure`: a collision, off-road, or a
terminal lane invasion), else ``0.99 * max(1 - min TTC / 10 s, max |lateral offset| / half a lane)`` in
``[0, 0.99]``: how close the episode came. Serial, or as Ray tasks (:func:`kai_drive.distributed.map_episodes`).

**Search** (:func:`cem_search`; Rubinstein & Kroese's cross-entropy method for rare events). The proposal is
``q = N(mu, diag sigma^2)`` over the latent ``z`` (:mod:`.space`), starting at the nominal ``N(0, I)``. Each
round draws ``batch`` points (each with a fresh road seed from the nominal), scores them by
``J = severity + plausibility_weight * (log N(z) - log N(0))``, keeps the elite: the top ``elite_frac`` by
``J``, or every failure when there are more, and refits ``mu, sigma`` to the elite weighted by the
likelihood ratio ``N(z; 0, I) / q(z)`` (so the proposal approaches the nominal distribution *conditioned on
failure*: plausible failures, not extreme ones), smoothed by ``alpha``. ``method="random"`` keeps ``q`` at
the nominal: plain Monte Carlo, the reference a search is compared with.

**Estimate** (:func:`is_estimate`): with ``estimate=True`` the last part of the budget draws from the
defensive mixture ``0.9 q + 0.1 N(0, I)`` (weights bounded by 10) of ``q`` = the Gaussian fitted to *every*
failure of the search, each weighted by ``p/q_round`` (:func:`_pooled_fit`) and
``P = mean(1[fail] N(z)/q(z))`` is the (unbiased) importance-sampling estimate of the failure probability
under the nominal distribution, with a normal 95 % interval from the sample variance of the terms.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kai_drive import stats
from kai_drive.evaluation.stress.space import FactorSpace

__all__ = ["SearchConfig", "stress_episode", "severity", "cem_search", "is_estimate", "log_normal_pdf",
           "mixture_logpdf"]

TTC_CAP_S = 10.0


@dataclass
class SearchConfig:
    """What a search does: ``budget`` episodes in rounds of ``batch``; see the module docstring."""

    budget: int = 100
    batch: int = 10
    method: str = "cem"  # cem | random
    elite_frac: float = 0.2
    alpha: float = 0.9
    min_sigma: float = 0.1
    plausibility_weight: float = 0.01
    severity: str = "graded"  # graded | max (see severity())
    weighted: bool = False  # True: weight the elite by p/q (toward the nominal); False: a plain fit to the elite
    memory: bool = True  # refit on the elite of every search episode so far; False: of the last round only
    estimate: bool = False
    estimate_frac: float = 0.5
    defensive: float = 0.1
    seed: int = 0
    max_steps: int | None = None

    def check(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: use one of {SEVERITIES}")
        if self.method not in ("cem", "random"):
            raise ValueError(f"method {self.method!r}: use 'cem' or 'random'")
        if self.budget < 1 or self.batch < 1:
            raise ValueError(f"budget ({self.budget}) and batch ({self.batch}) must be >= 1")
        if not 0 < self.elite_frac <= 1 or not 0 < self.estimate_frac < 1 or not 0 < self.alpha <= 1:
            raise ValueError("elite_frac and alpha must be in (0, 1] and estimate_frac in (0, 1)")


# ---------------------------------------------------------------------------------------------------
# one episode
# ---------------------------------------------------------------------------------------------------
SEVERITIES = ("max", "graded")


def severity(outcome_failed: bool, min_ttc_s: float, max_abs_lateral_m: float, half_lane_m: float,
             rule: str = "max") -> float:
    """1 for a failure; else how close the episode came, in ``[0, 0.99]``.

    ``"max"``: ``0.99 * max(1 - min(TTC, 10 s) / 10 s, max |lateral offset| / half lane)`` (the first rule:
    a TTC under 1 s, common where a pedestrian crosses, gives 0.9 and hides the lateral excursions).
    ``"graded"``: ``0.99 * mean(1 - log(1 + TTC) / log(11), min(max |lateral offset| / half lane, 1))``: the
    TTC term still separates 0.4 s from 1 s (0.86 vs 0.71), and both ways to fail, a collision and a lane
    invasion, move the score."""
    if outcome_failed:
        return 1.0
    ttc = min(float(min_ttc_s), TTC_CAP_S) if math.isfinite(min_ttc_s) else TTC_CAP_S
    lat = min(float(max_abs_lateral_m) / max(half_lane_m, 1e-6), 1.0)
    if rule == "graded":
        return 0.99 * 0.5 * (1.0 - math.log1p(max(ttc, 0.0)) / math.log1p(TTC_CAP_S) + lat)
    if rule != "max":
        raise ValueError(f"severity rule {rule!r}: use one of {SEVERITIES}")
    return 0.99 * max(1.0 - ttc / TTC_CAP_S, lat, 0.0)


def stress_episode(item: dict) -> dict:
    """One episode of a stress search (module level and a function of ``item`` only, for Ray workers).

    ``item``: ``env_id``, ``env_config``, ``policy`` (a :func:`kai_drive.evaluation.jobs.policy_of`
    description), ``seed`` (road and noise seed), and what to set: ``space`` and ``x`` (a
    :class:`FactorSpace` and factor values), ``overrides`` (a nested partial record) or ``record`` (a full one), ``max_steps``, ``frames_every``. Returns ``record`` (the realised
    scenario: replaying it with ``reset(options={"scenario": record})`` gives this episode again), ``outcome``,
    ``failed``, ``severity``, ``min_ttc_s``, ``max_abs_lateral_m``, ``route_completion``, ``steps``,
    ``seconds`` (and ``frames`` with ``frames_every``)."""
    from kai_drive.evaluation.jobs import policy_of, worker_env
    from kai_drive.evaluation.rollout import rollout
    from kai_drive.metrics import family_of, is_failure

    t0 = time.perf_counter()
    env = worker_env(item["env_id"], item.get("env_config") or {})
    pol = policy_of(item["policy"])
    seed = int(item["seed"])
    scen = item.get("record") or item.get("overrides")
    if "x" in item:  # factor values: set them on the seed's record (the worker realises it when a list needs it)
        space, base = item["space"], None
        if space.needs_record():
            from kai_drive.evaluation.rollout import reset_options

            base = env.reset(seed=seed, options=reset_options(seed))[1]["scenario"]
        scen = space.apply(np.asarray(item["x"], float), record=base)
    every = int(item.get("frames_every", 0))
    tr = rollout(env, pol, seed, scen, max_steps=item.get("max_steps"), frames_every=every)
    m = family_of(env).episode_metrics(tr.infos, tr.dt)
    lat = max((abs(float(i.get("lateral_offset_m", 0.0))) for i in tr.infos), default=0.0)
    half_lane = 0.5 * float(env.unwrapped.spec_data.road.lane_width_m)
    failed = is_failure(tr.outcome)
    out = {"seed": seed, "record": tr.scenario, "outcome": tr.outcome, "failed": failed,
           "severity": severity(failed, m["min_ttc_s"], lat, half_lane, item.get("severity", "max")), "min_ttc_s": m["min_ttc_s"],
           "max_abs_lateral_m": lat, "route_completion": m["route_completion"], "steps": tr.steps,
           "seconds": time.perf_counter() - t0}
    if every:
        out["frames"] = tr.frames
    return out


# ---------------------------------------------------------------------------------------------------
# densities
# ---------------------------------------------------------------------------------------------------
def log_normal_pdf(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``log N(z; mu, diag sigma^2)`` per row of ``z`` ``[n, d]``."""
    from scipy.stats import norm

    return norm.logpdf(np.atleast_2d(z), np.asarray(mu, float), np.asarray(sigma, float)).sum(axis=1)


def mixture_logpdf(z: np.ndarray, mu: np.ndarray, sigma: np.ndarray, defensive: float) -> np.ndarray:
    """``log((1 - defensive) N(z; mu, sigma) + defensive N(z; 0, I))`` per row."""
    d = np.atleast_2d(z).shape[1]
    a = np.log1p(-defensive) + log_normal_pdf(z, mu, sigma) if defensive < 1 else np.full(len(np.atleast_2d(z)), -np.inf)
    b = np.log(defensive) + log_normal_pdf(z, np.zeros(d), np.ones(d)) if defensive > 0 else np.full_like(a, -np.inf)
    return np.logaddexp(a, b)


def is_estimate(failed: np.ndarray, log_p: np.ndarray, log_q: np.ndarray) -> dict[str, Any]:
    """Importance-sampling estimate of ``P(fail)`` under ``p`` from i.i.d. draws of ``q``: ``mean(1[fail] p/q)``
    (unbiased), its standard error and a normal 95 % interval (clipped at 0), the effective sample size of
    the failure weights, and ``n``. With no failure drawn the estimate is 0 and the interval's upper end is
    ``3 * max weight / n`` (the rule of three scaled by the largest weight: a rough bound, not exact)."""
    f = np.asarray(failed, float)
    w = np.exp(np.asarray(log_p, float) - np.asarray(log_q, float))
    terms = f * w
    n = len(terms)
    p_hat = float(terms.mean()) if n else math.nan
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    wf = w[f > 0]
    ess = float(wf.sum() ** 2 / np.sum(wf * wf)) if len(wf) else 0.0
    if len(wf):
        ci = [max(0.0, p_hat - 1.96 * se), p_hat + 1.96 * se]
    else:
        ci = [0.0, float(3.0 * w.max() / n) if n else math.nan]
    return {"p": p_hat, "se": se, "ci95": ci, "n": n, "failures": int(f.sum()), "ess_failures": ess,
            "max_weight": float(w.max()) if n else math.nan}


# ---------------------------------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """Every episode of a search (in order) and the proposal after each round."""

    space: FactorSpace
    z: np.ndarray
    episodes: list[dict]
    rounds: list[dict] = field(default_factory=list)
    phase: list[str] = field(default_factory=list)  # "search" / "estimate" per episode
    log_q: np.ndarray | None = None  # log density of the distribution each episode was drawn from
    estimate: dict | None = None
    wall_s: float = 0.0


def _refit(z: np.ndarray, score: np.ndarray, failed: np.ndarray, log_w: np.ndarray, cfg: SearchConfig,
           mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One cross-entropy update: elite (top ``elite_frac`` of ``z`` by score, or every failure when more),
    weights ``p/q`` (with ``cfg.weighted``), smoothed mean and standard deviation. ``z`` is the round's batch,
    or with ``cfg.memory`` every search episode so far."""
    k = max(2, int(math.ceil(cfg.elite_frac * min(len(z), cfg.batch))))
    elite = np.nonzero(failed)[0] if failed.sum() >= k else np.argsort(-score)[:k]
    w = np.exp(log_w[elite] - log_w[elite].max()) if cfg.weighted else np.ones(len(elite))
    w = w / w.sum()
    m_new = (w[:, None] * z[elite]).sum(axis=0)
    s_new = np.sqrt((w[:, None] * (z[elite] - m_new) ** 2).sum(axis=0))
    mu = cfg.alpha * m_new + (1 - cfg.alpha) * mu
    sigma = np.maximum(cfg.alpha * s_new + (1 - cfg.alpha) * sigma, cfg.min_sigma)
    return mu, sigma, len(elite)


def _pooled_fit(z: np.ndarray, eps: list[dict], log_q: np.ndarray, space: FactorSpace, cfg: SearchConfig,
                mu: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The estimate's proposal: the Gaussian fit to every failure of the search, each weighted by ``p/q`` of
    the round that drew it (the cross-entropy fit to the nominal distribution conditioned on failure, from all
    rounds rather than the last one: a last-round fit is often too narrow, leaving failures to the defensive
    part and the estimate heavy-tailed). Fewer than 2 failures: the last round's proposal."""
    failed = np.asarray([e["failed"] for e in eps], bool)
    if failed.sum() < 2:
        return mu, sigma
    lw = space.log_likelihood(z[failed]) - log_q[failed]
    w = np.exp(lw - lw.max())
    w /= w.sum()
    m = (w[:, None] * z[failed]).sum(axis=0)
    s = np.sqrt((w[:, None] * (z[failed] - m) ** 2).sum(axis=0))
    return m, np.maximum(s, cfg.min_sigma)


def cem_search(  # long: the loop over rounds, its bookkeeping and the estimate phase in one place
    space: FactorSpace,
    run: Callable[[list[dict]], list[dict]],
    make_item: Callable[[int, np.ndarray], dict],
    cfg: SearchConfig,
    log: Callable[[str], None] = lambda m: None,
) -> SearchResult:
    """Run ``cfg.budget`` episodes: ``make_item(road_seed, x)`` builds an episode item for factor values ``x``,
    ``run(items)`` runs a batch (serially or on Ray, results in order). See the module docstring."""
    cfg.check()
    t0 = time.perf_counter()
    rng = np.random.default_rng([int(cfg.seed), 1917])
    d = space.dim
    mu, sigma = np.zeros(d), np.ones(d)
    n_search = cfg.budget - (int(round(cfg.estimate_frac * cfg.budget)) if cfg.estimate else 0)
    zs, eps, phases, log_qs, rounds = [], [], [], [], []
    pool: list[tuple] = []  # per search round: z, score, failed, log p/q
    done = 0
    while done < cfg.budget:
        estimating = done >= n_search
        if estimating and not rounds[-1]["phase"] == "estimate" and cfg.method == "cem":
            mu, sigma = _pooled_fit(np.concatenate(zs), eps, np.concatenate(log_qs), space, cfg, mu, sigma)
        n = min(cfg.batch, (n_search if not estimating else cfg.budget) - done)
        if estimating and cfg.method == "cem":
            pick = rng.random(n) < cfg.defensive
            z = np.where(pick[:, None], rng.standard_normal((n, d)), mu + sigma * rng.standard_normal((n, d)))
            log_q = mixture_logpdf(z, mu, sigma, cfg.defensive)
        else:
            z = mu + sigma * rng.standard_normal((n, d))
            log_q = log_normal_pdf(z, mu, sigma)
        seeds = rng.integers(0, 2**31 - 1, size=n)
        res = run([make_item(int(s), space.to_x(zi)) for s, zi in zip(seeds, z)])
        failed = np.asarray([r["failed"] for r in res], bool)
        sev = np.asarray([r["severity"] for r in res], float)
        log_p = space.log_likelihood(z)
        zs.append(z), eps.extend(res), log_qs.append(log_q)
        phases.extend(["estimate" if estimating else "search"] * n)
        done += n
        row = {"round": len(rounds), "phase": "estimate" if estimating else "search", "episodes": n,
               "failures": int(failed.sum()), "mean_severity": float(sev.mean()),
               "mu": mu.tolist(), "sigma": sigma.tolist()}
        if cfg.method == "cem" and not estimating:
            score = sev + cfg.plausibility_weight * (log_p - space.log_likelihood(np.zeros(d)))
            pool.append((z, score, failed, log_p - log_q))
            if cfg.memory:  # every search round so far
                z_r, score_r, failed_r, lw_r = (np.concatenate(a) for a in zip(*pool))
            else:
                z_r, score_r, failed_r, lw_r = pool[-1]
            mu, sigma, row["elite"] = _refit(z_r, score_r, failed_r, lw_r, cfg, mu, sigma)
        rounds.append(row)
        log(f"round {row['round']} ({row['phase']}): {n} episodes, {row['failures']} failures, mean severity "
            f"{row['mean_severity']:.3f}; {done}/{cfg.budget} episodes, {time.perf_counter() - t0:.0f} s")
    z_all = np.concatenate(zs) if zs else np.zeros((0, d))
    out = SearchResult(space, z_all, eps, rounds, phases, np.concatenate(log_qs) if log_qs else None)
    if cfg.estimate:
        failed = np.asarray([e["failed"] for e in eps], bool)
        if cfg.method == "cem":
            sel = np.asarray([p == "estimate" for p in phases])
            out.estimate = is_estimate(failed[sel], space.log_likelihood(z_all[sel]), out.log_q[sel])
            out.estimate["method"] = "importance sampling from the defensive mixture of the final CEM proposal"
        else:  # every episode is a nominal draw: plain Monte Carlo over all of them, Wilson interval
            r = stats.rate(failed.astype(float).tolist())
            out.estimate = {"p": r["rate"], "ci95": list(r["ci95"]), "n": r["n"], "failures": r["count"],
                            "method": "plain Monte Carlo (nominal draws), Wilson interval"}
    out.wall_s = time.perf_counter() - t0
    return out
