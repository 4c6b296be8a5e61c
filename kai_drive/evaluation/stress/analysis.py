"""What a search found: distinct failures, failure modes, the most influential factors, and for each mode the
smallest single-factor change toward the nominal distribution that removes the failure.

* **Distinct failures** (:func:`distinct_failures`): failures whose factor quantiles ``u = Phi(z)`` differ by
  more than ``tol`` (0.05: 5 % of a factor's range) in at least one factor from every earlier failure, so a
  search that keeps re-finding the same world does not count it twice.
* **Influence** (:func:`influence`): ``|corr(u_i, severity)|`` over every episode of the search.
* **Modes** (:func:`failure_modes`): failures grouped by outcome (``collision:vehicle``, ``lane_invasion``,
  ...), then single-linkage clusters within an outcome: two failures are linked when their quantiles over
  the ``k`` most influential factors are within ``radius`` (Euclidean): ``scipy.cluster.hierarchy``'s
  ``linkage(method="single")`` cut with ``fcluster(t=radius, criterion="distance")``.
* **Smallest single-factor change** (:func:`smallest_changes`): for a mode's most plausible failure, each
  factor alone is moved toward the median of its range (``z_i -> t z_i``): ``t = 0`` first (the factor at
  its median); if that removes the failure, ``bisect`` halvings find the smallest move (in latent standard
  deviations, comparable across factors) that still does. Replays of the full record, so nothing else changes.
  Discrete factors (a pedestrian's side) have no "small" change and are left out.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kai_drive.evaluation.stress.space import FactorSpace

__all__ = ["distinct_failures", "influence", "failure_modes", "smallest_changes"]


def distinct_failures(u: np.ndarray, tol: float = 0.05) -> list[int]:
    """Indices (into the rows of ``u``, the failures in the order found) of the distinct ones (greedy)."""
    keep: list[int] = []
    for i, row in enumerate(np.atleast_2d(u)):
        if all(np.nanmax(np.abs(row - u[j])) > tol for j in keep):
            keep.append(i)
    return keep


def influence(u: np.ndarray, sev: np.ndarray) -> np.ndarray:
    """``|corr(u_i, severity)|`` per factor (0 where a column or the severity is constant or missing)."""
    u, sev = np.atleast_2d(np.asarray(u, float)), np.asarray(sev, float)
    out = np.zeros(u.shape[1])
    for i in range(u.shape[1]):
        ok = np.isfinite(u[:, i])
        if ok.sum() > 2 and np.std(u[ok, i]) > 0 and np.std(sev[ok]) > 0:
            out[i] = abs(float(np.corrcoef(u[ok, i], sev[ok])[0, 1]))
    return out


def failure_modes(u: np.ndarray, outcomes: list[str], order: np.ndarray, k: int = 3, radius: float = 0.25) -> list[int]:
    """A mode label per failure (0 = the biggest mode): outcome, then single linkage (scipy) over the ``k`` most
    influential factors (``order``: factor indices, most influential first), cut at distance ``radius``."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(outcomes)
    cols = list(order[: max(1, min(k, u.shape[1]))])
    pts = np.nan_to_num(np.atleast_2d(u)[:, cols], nan=0.5) if n else np.zeros((0, len(cols)))
    groups: list[tuple[str, int]] = [("", 0)] * n  # (outcome, cluster within it)
    for outcome in dict.fromkeys(outcomes):
        idx = [i for i in range(n) if outcomes[i] == outcome]
        labels = fcluster(linkage(pts[idx], method="single"), t=radius, criterion="distance") if len(idx) > 1 else [1]
        for i, c in zip(idx, labels):
            groups[i] = (outcome, int(c))
    sizes: dict[tuple[str, int], int] = {}
    first: dict[tuple[str, int], int] = {}
    for i, g in enumerate(groups):
        sizes[g] = sizes.get(g, 0) + 1
        first.setdefault(g, i)
    rank = {g: m for m, g in enumerate(sorted(sizes, key=lambda g: (-sizes[g], first[g])))}
    return [rank[g] for g in groups]


def smallest_changes(  # long: the bisection over every factor in batched rounds, and its rows
    space: FactorSpace, record: dict, seed: int, run: Callable[[list[dict]], list[dict]],
    make_item: Callable[[int, dict], dict], bisect: int = 3,
) -> dict[str, Any]:
    """For the failure ``record``: per factor, the smallest move toward its median that removes the failure
    (see the module docstring); ``run`` runs a batch of items built by ``make_item(seed, full_record)``.
    Returns ``{"factors": [...], "smallest": the row with the smallest move or None, "episodes": n}``."""
    x0 = space.read(record)
    z0 = space.to_z(x0)
    rows: dict[int, dict] = {}
    episodes = 0

    def replay(cands: list[tuple[int, float]]) -> list[dict]:
        items = []
        for i, t in cands:
            z = z0.copy()
            z[i] = t * z0[i]
            x = x0.copy()
            x[i] = float(space.factors[i].to_x(np.array([z[i]]))[0])
            items.append(make_item(seed, space.apply(x, record=record)))
        return run(items)

    cands = [(i, 0.0) for i, f in enumerate(space.factors)
             if not f.discrete and np.isfinite(z0[i]) and abs(z0[i]) > 1e-6]
    res = replay(cands)
    episodes += len(res)
    lo: dict[int, float] = {}
    for (i, _), r in zip(cands, res):
        f = space.factors[i]
        rows[i] = {"factor": f.name, "failure_value": float(x0[i]), "failure_z": float(z0[i]),
                   "median_value": float(f.to_x(np.array([0.0]))[0]), "removes_failure": not r["failed"],
                   "outcome_at_median": r["outcome"]}
        if not r["failed"]:
            lo[i] = 0.0  # t = 0 removes it, t = 1 (the failure) does not
    hi = {i: 1.0 for i in lo}
    for _ in range(bisect):
        cands = [(i, 0.5 * (lo[i] + hi[i])) for i in lo]
        if not cands:
            break
        res = replay(cands)
        episodes += len(res)
        for (i, t), r in zip(cands, res):
            if r["failed"]:
                hi[i] = t
            else:
                lo[i] = t
    for i, t in lo.items():  # t: the largest tested fraction of the original z that still removes the failure
        f = space.factors[i]
        x_new = float(f.to_x(np.array([t * z0[i]]))[0])
        rows[i].update({"changed_value": x_new, "change": x_new - float(x0[i]),
                        "change_sigma": float((1 - t) * abs(z0[i]))})
    factors = [rows[i] for i in sorted(rows)]
    removing = [r for r in factors if r["removes_failure"]]
    best = min(removing, key=lambda r: r["change_sigma"]) if removing else None
    return {"factors": factors, "smallest": best, "episodes": episodes}

