"""Multi-seed runs and hyperparameter sweeps: ``python -m kai_drive.sweep --env lane-keep --seeds 5``.

Every trial is a normal ``kai_drive.train`` run (same recipes, same run folders) under
``runs/sweeps/<name>/runs/<trial>/``; Ray Tune schedules them over a local Ray instance (started and
stopped here) or a cluster (``--address`` / ``$RAY_ADDRESS``), or ``--engine serial`` runs them one after
the other without Ray. See docs/sweeps.md. Flags and planning: :mod:`kai_drive.distributed.sweep.flags` and
:mod:`~kai_drive.distributed.sweep.plan`; the run: :mod:`kai_drive.distributed.sweep.engine`.
"""

from __future__ import annotations

import shlex
import sys

from kai_drive.distributed import RayMissingError, require_ray
from kai_drive.distributed.sweep.engine import run_sweep
from kai_drive.distributed.sweep.flags import EPILOG, build_parser, make_plan
from kai_drive.distributed.sweep.plan import UsageError

__all__ = ["EPILOG", "build_parser", "main", "make_plan"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        plan = make_plan(argv)
        if plan.engine == "ray":
            require_ray("python -m kai_drive.sweep", optuna=bool(plan.search))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RayMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    command = "python -m kai_drive.sweep " + " ".join(shlex.quote(a) for a in argv)
    return run_sweep(plan, command)


if __name__ == "__main__":
    sys.exit(main())
