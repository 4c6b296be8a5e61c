"""sha256 of what an env shows a policy: the tests' one way to say "these observations are the same"."""

from __future__ import annotations

import hashlib

import gymnasium
import numpy as np


def obs_digest(env: gymnasium.Env, seed: int, options: dict | None = None, action: np.ndarray | None = None,
               steps: int = 4) -> str:
    """sha256 of every observation byte (and reward) of ``reset(seed, options)`` and up to ``steps`` steps of a
    fixed ``action`` (default: zeros)."""
    h = hashlib.sha256()
    obs, _ = env.reset(seed=seed, options=options)
    if action is None:
        action = np.zeros(env.action_space.shape, dtype=np.float32)
    for t in range(steps + 1):
        for key in sorted(obs):
            h.update(key.encode())
            h.update(np.ascontiguousarray(obs[key]).tobytes())
        if t == steps:
            break
        obs, reward, terminated, truncated, _ = env.step(action)
        h.update(np.float64(reward).tobytes())
        if terminated or truncated:
            break
    return h.hexdigest()
