"""Aggregates over seeds: mean and interquartile mean (IQM) with percentile-bootstrap 95 % intervals.

IQM (rliable, Agarwal et al. 2021): the mean of the middle 50 % of the sorted values -- robust to one
lucky or unlucky seed, less noisy than the median. With fewer than 4 values nothing is trimmed and the
IQM equals the mean. Intervals resample seeds with replacement (2000 resamples, fixed generator seed),
so the same numbers give the same interval; with one seed the interval is the single value.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from kai_drive.stats import iqm  # noqa: F401 - re-exported for the sweep summary




def bootstrap_ci(values: Sequence[float], stat: Callable[[Sequence[float]], float], n_boot: int = 2000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values`` (resampled with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = np.array([stat(x[i]) for i in idx])
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1.0 - alpha))


def aggregate(values: Sequence[float]) -> dict:
    """``{"n", "values", "mean", "mean_ci95", "iqm", "iqm_ci95"}`` (NaNs dropped)."""
    x = [float(v) for v in values if v is not None and np.isfinite(v)]
    return {
        "n": len(x),
        "values": x,
        "mean": float(np.mean(x)) if x else float("nan"),
        "mean_ci95": list(bootstrap_ci(x, lambda a: float(np.mean(a)))),
        "iqm": iqm(x),
        "iqm_ci95": list(bootstrap_ci(x, iqm)),
    }
