"""Tasks: what the agent is asked to do. A task builds its scene through kai_drive.sim, applies the
action, and scores the outcome (reward terms, termination, success, safety cost, info). It never renders."""

from kai_drive.tasks.driving import DriveTask, LaneKeepTask
from kai_drive.tasks.grasping import GraspTask

TASKS = {"lane_keep": LaneKeepTask, "drive": DriveTask, "grasp": GraspTask}

#: task families: what the upper floors (metrics, experts, evaluation) branch on, never an env id string
FAMILIES = ("driving", "grasp")

__all__ = ["DriveTask", "FAMILIES", "GraspTask", "LaneKeepTask", "TASKS"]
