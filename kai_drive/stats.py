"""The statistics module: mean and IQM with percentile-bootstrap 95 % CIs, paired differences, rates.

Every function takes plain sequences of per-episode (or per-seed) values and is deterministic given
``seed``. NaN entries are dropped (an episode where a metric is undefined, e.g. no car ahead for TTC);
``n`` in the result counts the values actually used.

* :func:`iqm` - interquartile mean (mean of the middle 50 %, as ``scipy.stats.trim_mean(x, 0.25)``;
  Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice").
* :func:`bootstrap_ci` - percentile bootstrap of any statistic over the episodes.
* :func:`summarize` - ``{"n", "mean", "mean_ci95", "iqm", "iqm_ci95", "std", "min", "max"}``.
* :func:`paired_difference` - treatment minus control on the same seeds; the CI resamples seeds (pairs),
  so the seed-to-seed variation shared by both arms cancels.
* :func:`rate` - a binary rate with its Wilson 95 % interval.
* :func:`aggregate` - a sweep's per-seed values: mean and IQM with bootstrap CIs and the values themselves
  (IQM: rliable, Agarwal et al. 2021; with fewer than 4 values nothing is trimmed and the IQM is the mean).
* :func:`two_level_bootstrap` - CI of a mean over seeds of per-seed episode means, resampling seeds and
  then episodes within each seed.

numpy only (importable without the optional extras). scipy has equivalents (``trim_mean``,
``binomtest(...).proportion_ci("wilson")``, ``bootstrap``) whose floating-point results differ in the last
bits; these functions keep the numbers of every result file written so far.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["iqm", "bootstrap_ci", "summarize", "paired_difference", "rate", "wilson_interval", "ratio_summary",
           "aggregate", "two_level_bootstrap"]

N_BOOT = 2000


def _clean(x: Sequence[float]) -> np.ndarray:
    a = np.asarray(list(x), dtype=np.float64).reshape(-1)
    return a[~np.isnan(a)]


def iqm(x: Sequence[float]) -> float:
    """Interquartile mean: drop ``floor(n/4)`` values from each end of the sorted sample, average the rest."""
    a = np.sort(_clean(x))
    n = len(a)
    if n == 0:
        return math.nan
    cut = int(0.25 * n)
    return float(a[cut:n - cut].mean())


def _iqm_rows(m: np.ndarray) -> np.ndarray:
    """IQM of every row of a 2-D array (vectorised for the bootstrap)."""
    n = m.shape[1]
    cut = int(0.25 * n)
    return np.sort(m, axis=1)[:, cut:n - cut].mean(axis=1)


def bootstrap_ci(
    x: Sequence[float],
    stat: str | Callable[[np.ndarray], float] = "mean",
    n_boot: int = N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of ``stat`` ("mean", "iqm" or a callable of a 1-D array).

    Returns ``(nan, nan)`` for an empty sample; a sample of one gives a zero-width interval. The vectorised
    "mean" / "iqm" and the equivalent callables may differ in the last floating-point bits."""
    a = _clean(x)
    n = len(a)
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    m = a[idx]
    if stat == "mean":
        vals = m.mean(axis=1)
    elif stat == "iqm":
        vals = _iqm_rows(m)
    elif callable(stat):
        vals = np.asarray([stat(row) for row in m])
    else:
        raise ValueError(f"stat must be 'mean', 'iqm' or a callable, got {stat!r}")
    lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def summarize(x: Sequence[float], seed: int = 0, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Mean and IQM with 95 % bootstrap CIs, std, min, max of a sample (NaN dropped)."""
    a = _clean(x)
    if len(a) == 0:
        return {"n": 0, "mean": None, "mean_ci95": None, "iqm": None, "iqm_ci95": None, "std": None,
                "min": None, "max": None}
    return {
        "n": int(len(a)),
        "mean": float(a.mean()),
        "mean_ci95": list(bootstrap_ci(a, "mean", n_boot, seed=seed)),
        "iqm": iqm(a),
        "iqm_ci95": list(bootstrap_ci(a, "iqm", n_boot, seed=seed)),
        "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
    }


def paired_difference(treatment: Sequence[float], control: Sequence[float], seed: int = 0,
                      n_boot: int = N_BOOT) -> dict[str, Any]:
    """Average treatment effect ``mean(treatment - control)`` over pairs (same seed in both arms) with a
    paired bootstrap 95 % CI; pairs where either value is NaN are dropped. ``significant``: the CI
    excludes 0. ``relative``: the effect divided by ``|mean(control)|`` (None when that is ~0)."""
    t = np.asarray(list(treatment), dtype=np.float64)
    c = np.asarray(list(control), dtype=np.float64)
    if t.shape != c.shape:
        raise ValueError(f"paired_difference needs equal-length arms, got {t.shape} and {c.shape}")
    ok = ~(np.isnan(t) | np.isnan(c))
    d = t[ok] - c[ok]
    if len(d) == 0:
        return {"n": 0, "ate": None, "ci95": None, "significant": False, "control_mean": None,
                "treatment_mean": None, "relative": None}
    lo, hi = bootstrap_ci(d, "mean", n_boot, seed=seed)
    cm = float(c[ok].mean())
    return {
        "n": int(len(d)),
        "ate": float(d.mean()),
        "ci95": [lo, hi],
        "significant": bool(lo > 0 or hi < 0),
        "control_mean": cm,
        "treatment_mean": float(t[ok].mean()),
        "relative": float(d.mean() / abs(cm)) if abs(cm) > 1e-9 else None,
    }


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 %); ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags: Sequence[bool | float]) -> dict[str, Any]:
    """A binary rate over episodes: ``{"n", "count", "rate", "ci95"}`` (Wilson interval)."""
    a = _clean([float(f) for f in flags])
    k = int((a > 0.5).sum())
    n = int(len(a))
    return {"n": n, "count": k, "rate": k / n if n else None, "ci95": list(wilson_interval(k, n))}


def ratio_summary(events: Sequence[float], km: Sequence[float], seed: int = 0, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Events per km pooled over episodes (``sum(events) / sum(km)``) with an episode-bootstrap 95 % CI."""
    e = np.asarray(list(events), dtype=np.float64)
    k = np.asarray(list(km), dtype=np.float64)
    total = float(k.sum())
    if len(e) == 0 or total <= 0:
        return {"n": int(len(e)), "per_km": None, "ci95": None, "events": float(e.sum()), "km": total}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(e), size=(n_boot, len(e)))
    num, den = e[idx].sum(axis=1), k[idx].sum(axis=1)
    vals = num / np.maximum(den, 1e-12)
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return {"n": int(len(e)), "per_km": float(e.sum() / total), "ci95": [float(lo), float(hi)],
            "events": float(e.sum()), "km": total}


def aggregate(values: Sequence[float]) -> dict[str, Any]:
    """A sweep's values over seeds: ``{"n", "values", "mean", "mean_ci95", "iqm", "iqm_ci95"}`` (non-finite
    and None dropped; 2000 resamples, generator seed 0, so the same numbers give the same intervals)."""
    x = [float(v) for v in values if v is not None and np.isfinite(v)]
    conf = 1.0 - 0.95  # as written by the sweep summary since it existed (bit-identical quantiles)
    return {
        "n": len(x),
        "values": x,
        "mean": float(np.mean(x)) if x else float("nan"),
        "mean_ci95": list(bootstrap_ci(x, lambda a: float(np.mean(a)), alpha=conf)),
        "iqm": iqm(x),
        "iqm_ci95": list(bootstrap_ci(x, iqm, alpha=conf)),
    }


def two_level_bootstrap(per_seed: list[list[float]], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile CI of the mean over seeds of per-seed means, resampling seeds and then the episodes
    within each drawn seed (so both seed-to-seed and episode-to-episode variation count)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(x, float) for x in per_seed if len(x)]
    if not arrays:
        return (float("nan"), float("nan"))
    means = np.empty(n_boot)
    for b in range(n_boot):
        picks = rng.integers(0, len(arrays), len(arrays))
        means[b] = np.mean([rng.choice(arrays[i], len(arrays[i])).mean() for i in picks])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)
