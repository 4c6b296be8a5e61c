"""Trivial baselines that expose a metric rewarding inaction: ``stop`` and ``constant``.

A closed-loop driving benchmark whose score a car can earn by standing still (no collision, no lane
invasion, perfect comfort: "comfortably stuck") or by driving blindly straight ahead measures nothing.
The evaluator runs these next to every policy on the same safety seeds (``baselines`` in a suite,
``--no-baselines`` to skip), and the quick suite's thresholds are chosen so both fail on every driving
env (tests/test_suites.py).

* ``stop``: full brake, wheels straight (driving: action ``(0, -1)``); on the grasp env the analogue is
  the zero action (the arm holds still, the gripper as it is).
* ``constant``: straight ahead at a steady throttle (driving only: action ``(0, CONSTANT_THROTTLE)``).

Neither reads observations, so the evaluator disables the sensors for them (as for ``scripted``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kai_drive.evaluation.adapters import EvalPolicy

__all__ = ["BASELINES", "CONSTANT_THROTTLE", "ConstantPolicy", "FAMILY_BASELINES", "baseline_policy", "default_baselines"]

#: throttle of the ``constant`` baseline: a steady cruise of ~12 m/s on a flat road (a lane-keep target speed)
CONSTANT_THROTTLE = 0.3

#: names of the built-in baselines (``--policy``) besides ``scripted``
BASELINES = ("stop", "constant")


class ConstantPolicy(EvalPolicy):
    """The same action at every step, whatever the observation (reads none). ``action=None``: the zero
    action of the env's action space (sized at ``reset``)."""

    def __init__(self, action: Any, name: str) -> None:
        self.action = None if action is None else np.asarray(action, dtype=np.float32).reshape(-1)
        self._zero = action is None
        self.name = name

    def reset(self, env: Any) -> None:
        shape = tuple(getattr(env.action_space, "shape", ()) or ())
        if self._zero:
            self.action = np.zeros(shape, np.float32)
        elif shape != self.action.shape:
            raise ValueError(f"baseline {self.name!r}: its action {self.action.tolist()} does not fit the env's "
                             f"action space of shape {shape}")

    def __call__(self, obs: Any) -> np.ndarray:
        if self.action is None:
            raise RuntimeError(f"baseline {self.name!r}: reset(env) must be called after env.reset()")
        return self.action.copy()


#: each task family's baselines: name -> (the constant action, None for the zero action; the row's label)
FAMILY_BASELINES: dict[str, dict[str, tuple[list[float] | None, str]]] = {
    "driving": {"stop": ([0.0, -1.0], "stop (full brake)"),
                "constant": ([0.0, CONSTANT_THROTTLE], f"constant (straight, throttle {CONSTANT_THROTTLE:g})")},
    "grasp": {"stop": (None, "stop (zero action)")},
}


def baseline_policy(name: str, task: str) -> ConstantPolicy:
    """The built-in baseline ``name`` (``stop`` / ``constant``) for a task family (``driving`` / ``grasp``).
    Raises ValueError for a baseline the family has not."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; built-in: {list(BASELINES)} (and 'scripted')")
    mine = FAMILY_BASELINES[task]
    if name not in mine:
        owners = [t for t, b in FAMILY_BASELINES.items() if name in b]
        theirs = ", ".join(f"'{b}' ({label})" for b, (_, label) in mine.items())
        raise ValueError(f"--policy {name}: a {'/'.join(owners)} baseline; a {task} env has {theirs}")
    action, label = mine[name]
    return ConstantPolicy(action, label)


def default_baselines(task: str) -> list[str]:
    """The baselines a report shows next to the policy: ``stop`` and ``constant`` (driving), ``stop`` (grasp)."""
    return list(FAMILY_BASELINES[task])
