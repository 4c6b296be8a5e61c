"""Multi-seed runs and hyperparameter sweeps (``python -m kai_drive.sweep``), in three steps:

* :mod:`~kai_drive.distributed.sweep.plan` -- sweep flags -> a validated :class:`SweepPlan` (no Ray);
* :mod:`~kai_drive.distributed.sweep.engine` -- runs the plan with Ray Tune, writes summary.json / .md;
* :mod:`~kai_drive.distributed.sweep.trial` -- one Ray Tune trial: one ``kai_drive.train`` run in a subprocess.
"""
