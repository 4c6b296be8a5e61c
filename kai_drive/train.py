"""Train an SB3 agent on a kai-drive env: ``python -m kai_drive.train --env lane-keep``.

Everything a run needs is in its folder ``runs/<env alias>/<algo>_<n>/`` (see
:mod:`kai_drive.training.runs`); TensorBoard panels are described in docs/training.md. The training itself
is :mod:`kai_drive.training.trainer`; the flags are :mod:`kai_drive.training.flags`.
"""

from __future__ import annotations

import sys

from kai_drive.catalog import UnknownEnvError
from kai_drive.distributed.watchdog import strip_watch_flag, watch_parent
from kai_drive.config import SpecError
from kai_drive.training.flags import build_parser
from kai_drive.training.recipe import RecipeError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parent, argv = strip_watch_flag(argv)  # a sweep trial: stop cleanly when the Ray worker dies
    if parent is not None:
        watch_parent(parent)
    args = build_parser().parse_args(argv)
    # torch + SB3 are imported after parsing, so --help and flag errors stay fast
    from kai_drive.perception.spec import SpecMismatchError
    from kai_drive.perception.weights import WeightsError
    from kai_drive.training import trainer

    try:
        plan = trainer.prepare(args, argv)
    except (UnknownEnvError, RecipeError, SpecError, trainer.UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return trainer.run(plan)
    except (trainer.UsageError, WeightsError, SpecMismatchError) as exc:  # raised before the run folder is written
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
