"""The task contract and the task registry.

A task is what the agent is asked to do. :class:`kai_drive.env.KaiEnv` drives it through the hooks of
:class:`Task`; a new task subclasses it, gives its spec model (the YAML ``task:`` section, with a
``kind`` literal) and registers both::

    class MyTaskSpec(StrictModel):
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

from typing import Any, Callable, ClassVar, Mapping, NamedTuple

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
    then per step ``apply`` (before the physics step) and ``evaluate`` (after it); ``sensor_mount`` and
    ``chase_view`` whenever sensors or the renderer need a pose. After building, ``ego`` is the robot
    (``PROPRIO_FIELDS``, ``proprioception()``).

    Optional hooks have no-op defaults: ``save_state`` / ``restore_state`` (Python-side state that a
    PyBullet snapshot does not hold), ``realise`` / ``build_scenario`` (scenario factors as data).
    """

    family: ClassVar[str]
    PROPRIO_FIELDS: ClassVar[tuple[str, ...]]
    action_space: spaces.Box
    #: the robot, set by ``build``; sensors read it
    ego: Any = None
    #: True when the task realises a typed scenario record (``realise`` + ``build_scenario``): the env
    #: then accepts ``reset(options={"scenario": ...})`` and applies the record's light and sensor noise
    has_scenario: ClassVar[bool] = False

    def __init__(self, spec: Any) -> None:
        self.spec = spec  # the whole env spec: the task reads its own section and any other it needs

    # -- scene -----------------------------------------------------------------------------------
    def build(self, world: Any, rng: np.random.Generator) -> dict[str, Any]:
        """Create the scene in an empty ``world`` from ``rng``; returns the episode's record (JSON-able)."""
        raise NotImplementedError

    def realise(self, road_seed: int, noise_seed: int, overrides: Mapping[str, Any] | None = None) -> BaseModel:
        """The typed scenario record of ``road_seed`` with ``overrides`` set exactly (``has_scenario`` tasks)."""
        raise NotImplementedError(f"{type(self).__name__} has no scenario factors")

    def build_scenario(self, world: Any, record: BaseModel) -> None:
        """Create the scene of a record from :meth:`realise` in an empty ``world`` (``has_scenario`` tasks)."""
        raise NotImplementedError(f"{type(self).__name__} has no scenario factors")

    def reset_info(self) -> dict:
        """Info of the first observation."""
        raise NotImplementedError

    # -- step ------------------------------------------------------------------------------------
    def apply(self, action: np.ndarray, dt: float) -> None:
        """Command the robot (and move anything else scripted) before the physics step."""
        raise NotImplementedError

    def evaluate(self, world: Any, action: np.ndarray, dt: float, elapsed_s: float) -> tuple[float, bool, bool, dict]:
        """Score the step just simulated: ``(reward, terminated, truncated, info)``."""
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
