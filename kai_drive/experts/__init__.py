"""Scripted experts with privileged access to the simulator: they show a task is solvable, label
demonstrations for imitation (:mod:`kai_drive.training.imitation`) and are the ``scripted`` policy of
``python -m kai_drive.evaluate``.

* :mod:`kai_drive.experts.driving` -- :class:`~kai_drive.experts.driving.IDMPurePursuit` (IDM + pure pursuit).
* :mod:`kai_drive.experts.grasp` -- :class:`~kai_drive.experts.grasp.ScriptedGraspPolicy` (top-down grasps).
"""
