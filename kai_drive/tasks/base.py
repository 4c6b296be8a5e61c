"""The task contract and the task registry.

A task is what the agent is asked to do. :class:`kai_drive.env.KaiEnv` drives it through the hooks of
:class:`Task`; a new task subclasses it, gives its spec model (the YAML ``task:`` section, with a
``kind`` literal) and registers both::

    class MyTaskSpec(FrozenModel):
        kind: Literal["my_task"] = "my_task"
        ...

    @register_task("my_task", MyTaskSpec)
    class MyTask(Task):
        family = "driving"
        ...

The registry maps ``task.kind`` -> :class:`TaskEntry` (task class, spec model); the env specs validate
the ``task:`` section with the entry's spec model and the env builds the entry's class.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, NamedTuple

import numpy as np
from gymnasium import spaces
from pydantic import BaseModel

__all__ = ["FAMILIES", "REGISTRY", "Task", "TaskEntry", "register_task"]

#: task families: what the upper floors (metrics, experts, evaluation) branch on, never an env id string
FAMILIES = ("driving", "grasp")


class Task:
    """The contract between a task and :class:`kai_drive.env.KaiEnv` (subclass it).

    Class attributes:
        family: one of :data:`FAMILIES`.
        PROPRIO_FIELDS: names (with units) of the robot's proprioception vector, the "state" sensor.
        action_space: the env's action space (a class attribute, or set in ``__init__`` when it
            depends on the spec).

    Required hooks (the env calls them in this order): ``build`` (or ``realise`` + ``build_scenario``,
    see :attr:`has_scenario`) after ``World.reset()``; ``reset_info`` for the first observation's info;
    then per step ``apply`` (before the physics step) and ``evaluate`` (after it), which scores the step
    through ``_measure``, ``_reward_terms``, ``_terminated`` and ``_info``; ``sensor_mount`` and
    ``chase_view`` whenever sensors or the renderer need a pose. After building, ``ego`` is the robot
    (``PROPRIO_FIELDS``, ``proprioception()``). The task spec has ``time_limit_s``.

    Optional hooks: ``save_state`` / ``restore_state`` (Python-side state that a PyBullet snapshot does
    not hold; no-op defaults), ``realise`` / ``build_scenario`` (scenario factors as data, see
    :attr:`has_scenario`).
    """

    family: ClassVar[str]
    PROPRIO_FIELDS: ClassVar[tuple[str, ...]]
    action_space: spaces.Box
    #: the robot, set by ``build``; sensors read it
    ego: Any = None
    #: True when the task realises a typed scenario record: it then has
    #: ``realise(road_seed, noise_seed, overrides) -> record`` (every factor drawn from its own stream,
    #: ``overrides`` set exactly) and ``build_scenario(world, record)`` (the scene of a record, instead of
    #: ``build``); the env accepts ``reset(options={"scenario": ...})`` and applies the record's light and
    #: sensor noise. (Neither is defined on this base class.)
    has_scenario: ClassVar[bool] = False

    def __init__(self, spec: Any) -> None:
        self.spec = spec  # the whole env spec: the task reads its own section and any other it needs

    # -- scene -----------------------------------------------------------------------------------
    def build(self, world: Any, rng: np.random.Generator) -> dict[str, Any]:
        """Create the scene in an empty ``world`` from ``rng``; returns the episode's record (JSON-able)."""
        raise NotImplementedError

    def reset_info(self) -> dict:
        """Info of the first observation."""
        raise NotImplementedError

    # -- step ------------------------------------------------------------------------------------
    def apply(self, action: np.ndarray, dt: float) -> None:
        """Command the robot (and move anything else scripted) before the physics step."""
        raise NotImplementedError

    def evaluate(self, world: Any, action: np.ndarray, dt: float, elapsed_s: float) -> tuple[float, bool, bool, dict]:
        """Score the step just simulated: ``(reward, terminated, truncated, info)``, from the hooks below
        (in the spirit of highway-env's ``_rewards`` / ``_is_terminated`` / ``_info``): the reward is the
        sum of the reward terms; the episode is truncated at ``task.time_limit_s`` unless it terminated."""
        m = self._measure(world, action, dt)
        terms = self._reward_terms(m)
        reward = float(sum(terms.values()))
        terminated = self._terminated(m)
        truncated = bool(not terminated and elapsed_s >= self.spec.task.time_limit_s - 1e-9)
        return reward, terminated, truncated, self._info(m, terms)

    def _measure(self, world: Any, action: np.ndarray, dt: float) -> Any:
        """What the step did (poses, contacts, progress); updates the episode's counters."""
        raise NotImplementedError

    def _reward_terms(self, m: Any) -> dict[str, float]:
        """Each weighted reward term of the step (``info["reward_terms"]``)."""
        raise NotImplementedError

    def _terminated(self, m: Any) -> bool:
        """Whether the episode ends with this step (success or failure)."""
        raise NotImplementedError

    def _info(self, m: Any, terms: dict[str, float]) -> dict[str, Any]:
        """The step's info (``terms`` under ``"reward_terms"``)."""
        raise NotImplementedError

    # -- poses for sensors and the renderer --------------------------------------------------------
    def sensor_mount(self, world: Any) -> Any:
        """The :class:`kai_drive.sensors.base.Mount` on-board sensors sit on."""
        raise NotImplementedError

    def chase_view(self, distance_m: float, height_m: float) -> tuple[list[float], list[float]]:
        """Eye and target points of the render camera."""
        raise NotImplementedError

    # -- branching rollouts (KaiEnv.save_state / restore_state) ----------------------------------
    def save_state(self) -> Any:
        """Python-side state that PyBullet's saveState does not hold; None when there is none."""
        return None

    def restore_state(self, state: Any) -> None:
        """Bring back what :meth:`save_state` returned (called after the PyBullet state is restored)."""


class TaskEntry(NamedTuple):
    """One registered task kind."""

    task_cls: type[Task]
    spec_model: type[BaseModel]


#: task kind (the ``task.kind`` of an env YAML) -> task class and spec model
REGISTRY: dict[str, TaskEntry] = {}


def register_task(kind: str, spec: type[BaseModel]) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: ``task: {kind: <kind>, ...}`` validates against ``spec`` and builds the class."""

    def deco(cls: type[Task]) -> type[Task]:
        if cls.family not in FAMILIES:
            raise ValueError(f"task {cls.__name__}: family must be one of {FAMILIES}, got {cls.family!r}")
        REGISTRY[kind] = TaskEntry(cls, spec)
        return cls

    return deco
