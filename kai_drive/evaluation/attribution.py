"""Attribution maps (captum integrated gradients) on the camera and lidar, and their agreement with the
intervention effects.

For a differentiable policy, :func:`integrated_gradients` attributes the deterministic action (steering
and throttle/brake, summed in absolute value) to every camera pixel and lidar beam, against the
"sensor sees nothing" baseline (black image; every beam 1.0 = no hit).

Agreement (:func:`intervention_agreement`): in a paired intervention, the observations of the two arms
differ - until the policy's actions diverge - only where the intervened object shows (its pixels, the
beams that hit it). That region ``R`` is known without labels. The *relative attribution mass*
``RAM = (attribution mass in R / total mass) / (|R| / N)`` is 1 for attribution spread blindly,
> 1 when the policy's attribution concentrates on the intervened object. A factor the policy responds
to (causal effect) should show RAM > 1; a factor it ignores, RAM ~ 1 or below. The report puts RAM
next to each factor's ATE.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kai_drive import stats
from kai_drive.sensors.base import missing_value

__all__ = ["integrated_gradients", "intervention_agreement", "ATTR_KEYS"]

ATTR_KEYS = ("camera", "lidar")
_DIFF_TOL = {"camera": 12.0, "lidar": 0.01}


def integrated_gradients(policy: Any, obs: dict, n_steps: int = 16) -> dict[str, np.ndarray]:
    """``{key: |attribution|}`` per camera pixel (H, W; channels summed) and lidar beam (N,)."""
    import torch
    from captum.attr import IntegratedGradients

    x = policy.to_tensors(obs)
    keys = [k for k in ATTR_KEYS if k in x]
    if not keys:
        return {}
    others = {k: v for k, v in x.items() if k not in keys}

    total: dict[str, np.ndarray] = {}
    for target in range(int(np.prod(policy.action_low.shape))):
        def fwd(*inputs, target=target):
            b = inputs[0].shape[0]
            o = {k: v for k, v in zip(keys, inputs)}
            o.update({k: v.expand(b, *v.shape[1:]) for k, v in others.items()})
            return policy.torch_action(o)[:, target]

        ig = IntegratedGradients(fwd)
        inputs = tuple(x[k] for k in keys)
        baselines = tuple(torch.full_like(x[k], missing_value(k)) for k in keys)  # each sensor's 'lost' reading
        attrs = ig.attribute(inputs, baselines=baselines, n_steps=n_steps, method="gausslegendre")
        for k, a in zip(keys, attrs):
            a = np.abs(a[0].detach().numpy())
            if k == "camera":
                a = a.sum(axis=-1)
            total[k] = total.get(k, 0.0) + a
    return total


def _region(k: str, o_t: np.ndarray, o_c: np.ndarray) -> np.ndarray:
    d = np.abs(np.asarray(o_t, np.float32) - np.asarray(o_c, np.float32))
    if k == "camera":
        d = d.max(axis=-1)
    return d > _DIFF_TOL[k]


def intervention_agreement(policy: Any, pairs: Sequence[tuple[Any, Any]], max_steps_per_pair: int = 3,
                           n_steps: int = 16) -> dict[str, Any]:
    """RAM per sensor over the matched steps of paired trajectories (which must hold ``obs`` at every step).
    Returns ``{key: summary of RAM over (pair, step) samples}`` plus one example map for the report."""
    ram: dict[str, list[float]] = {k: [] for k in ATTR_KEYS}
    example: dict[str, Any] = {}
    for tc, tt in pairs:
        ac, at = tc.actions_array(), tt.actions_array()
        n = min(len(ac), len(at))
        if n == 0:
            continue
        div = np.nonzero(np.abs(at[:n] - ac[:n]).sum(axis=1) > 1e-6)[0]
        last = int(div[0]) if len(div) else n - 1  # obs up to here differ only through the factor
        steps = [t for t in range(last + 1) if t in tt.obs and t in tc.obs]
        cand = []
        for t in steps:
            if any(_region(k, tt.obs[t][k], tc.obs[t][k]).any() for k in ATTR_KEYS if k in tt.obs[t]):
                cand.append(t)
        if not cand:
            continue
        pick = [cand[i] for i in np.unique(np.linspace(len(cand) // 2, len(cand) - 1, max_steps_per_pair).astype(int))]
        for t in pick:
            attr = integrated_gradients(policy, tt.obs[t], n_steps=n_steps)
            for k, a in attr.items():
                r = _region(k, tt.obs[t][k], tc.obs[t][k])
                if not r.any() or a.sum() <= 0:
                    continue
                ram[k].append(float((a[r].sum() / a.sum()) / r.mean()))
                if k not in example:
                    example[k] = {"obs": np.asarray(tt.obs[t][k]), "attr": a, "region": r, "t_s": t * tt.dt}
    out: dict[str, Any] = {k: stats.summarize(v) for k, v in ram.items() if v}
    out["_example"] = example
    return out
