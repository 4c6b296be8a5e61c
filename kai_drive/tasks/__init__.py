"""Tasks: what the agent is asked to do. A task builds its scene through kai_drive.sim, applies the
action, and scores the outcome (reward terms, termination, success, safety cost, info). It never renders.

The contract and the registry (``task.kind`` -> task class and spec model) are in
:mod:`kai_drive.tasks.base`; importing this package registers the built-in tasks."""

from kai_drive.tasks.base import FAMILIES, REGISTRY, Task, TaskEntry, register_task
from kai_drive.tasks.driving import DriveTask, DriveTaskSpec, LaneKeepTask, LaneKeepTaskSpec
from kai_drive.tasks.grasping import GraspTask, GraspTaskSpec

__all__ = [
    "DriveTask", "DriveTaskSpec", "FAMILIES", "GraspTask", "GraspTaskSpec", "LaneKeepTask", "LaneKeepTaskSpec",
    "REGISTRY", "Task", "TaskEntry", "register_task",
]
