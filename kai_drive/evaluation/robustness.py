"""Robustness: the same seeds under perturbed conditions, reported as the drop relative to clean.

A condition is one of (suite ``robustness.conditions``):

* ``scenario: {dotted.path: value}`` - a scenario factor set exactly through ``reset(options=...)``
  (light, colours, the env's own sensor-noise model);
* ``transform: {camera: black, lidar: missing, noise: {camera: 20, lidar: 0.05, state: 0.05}}`` -
  observation corruption between the sensors and the policy (see :func:`rollout.sensor_transform`);
* ``attack: {method: fgsm|pgd, eps: {camera: 8, lidar: 0.05}, steps: 3}`` - an L-inf adversarial
  perturbation of the camera (0..255 units) and lidar (normalised range) computed every step against
  the policy's own gradients (:class:`AdversarialPolicy`): it maximises ``|pi(o + delta) - pi(o)|^2``
  from a random start (R+FGSM, Tramer et al. 2018; PGD, Madry et al. 2018). Needs a differentiable
  policy (an SB3 torch policy); skipped with a note otherwise.

Every condition runs on the clean run's seeds; :func:`drops` gives paired differences with CIs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kai_drive import stats
from kai_drive.evaluation.adapters import EvalPolicy

__all__ = ["AdversarialPolicy", "drops"]

_BOUNDS = {"camera": (0.0, 255.0), "lidar": (0.0, 1.0), "depth": (0.0, None)}


class AdversarialPolicy(EvalPolicy):
    """Wraps a differentiable policy: every observation is attacked within ``eps`` before acting.

    Args:
        policy: an :class:`~kai_drive.evaluation.adapters.SB3Policy` (``torch_action`` available).
        eps: L-inf budget per observation key (raw units: camera 0..255, lidar 0..1).
        method: ``fgsm`` (one step of 1.25 eps from a random start) or ``pgd`` (``steps`` steps of
            2.5 eps / steps from a random start).
        seed: the random start's generator seed.
    """

    differentiable = False

    def __init__(self, policy: Any, eps: dict[str, float], method: str = "pgd", steps: int = 3, seed: int = 0) -> None:
        if not getattr(policy, "differentiable", False):
            raise TypeError("AdversarialPolicy needs a differentiable policy (an SB3 torch policy)")
        if method not in ("fgsm", "pgd"):
            raise ValueError(f"attack method must be 'fgsm' or 'pgd', got {method!r}")
        import torch

        self.torch = torch
        self.policy = policy
        self.eps = {k: float(v) for k, v in eps.items()}
        self.method = method
        self.steps = 1 if method == "fgsm" else int(steps)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.name = f"{policy.name}+{method}"
        self.env_config = policy.env_config
        self.last_change = 0.0  # |a_adv - a_clean|_1 of the last step

    def reset(self, env: Any) -> None:
        self.policy.reset(env)

    def perturb(self, obs: dict) -> dict:
        th = self.torch
        x = self.policy.to_tensors(obs)
        keys = [k for k in self.eps if k in x and self.eps[k] > 0]
        if not keys:
            return obs
        with th.no_grad():
            a0 = self.policy.torch_action(x)
        delta = {k: (th.rand(x[k].shape, generator=self.gen) * 2 - 1) * self.eps[k] for k in keys}
        alpha = {k: (1.25 * self.eps[k] if self.method == "fgsm" else 2.5 * self.eps[k] / self.steps) for k in keys}

        def clamp_in(k, v):
            lo, hi = _BOUNDS.get(k, (None, None))
            return th.clamp(v, min=lo, max=hi) if lo is not None or hi is not None else v

        for _ in range(self.steps):
            for k in keys:
                delta[k].requires_grad_(True)
            xin = {k: (clamp_in(k, x[k] + delta[k]) if k in delta else x[k]) for k in x}
            loss = ((self.policy.torch_action(xin) - a0) ** 2).sum()
            grads = th.autograd.grad(loss, [delta[k] for k in keys], allow_unused=True)
            with th.no_grad():
                for k, g in zip(keys, grads):
                    step = alpha[k] * th.sign(g) if g is not None else 0.0
                    delta[k] = th.clamp(delta[k].detach() + step, -self.eps[k], self.eps[k])
        out = dict(obs)
        with th.no_grad():
            for k in keys:
                v = clamp_in(k, x[k] + delta[k])[0].numpy()
                out[k] = np.clip(np.rint(v), 0, 255).astype(np.uint8) if np.asarray(obs[k]).dtype == np.uint8 else v.astype(np.float32)
        return out

    def __call__(self, obs: Any) -> np.ndarray:
        adv = self.perturb(obs)
        a = self.policy(adv)
        return a


def drops(clean: Sequence[dict], perturbed: Sequence[dict], metrics: Sequence[str]) -> dict[str, Any]:
    """Paired (same seed) difference perturbed - clean of each metric (a task family's ``drop_metrics``,
    :data:`kai_drive.metrics.FAMILIES`), with a 95 % paired bootstrap CI and the relative change (divided
    by |clean mean|)."""
    by_seed = {m["seed"]: m for m in clean}
    pairs = [(by_seed[m["seed"]], m) for m in perturbed if m["seed"] in by_seed]
    out = {}
    for k in metrics:
        if not pairs or k not in pairs[0][0]:
            continue
        out[k] = stats.paired_difference([p[k] for _, p in pairs], [c[k] for c, _ in pairs])
    return out
