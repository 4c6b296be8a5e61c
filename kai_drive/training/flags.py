"""The flags of ``python -m kai_drive.train`` (a library module: the sweep and the ablation validate their
trials' train commands with this parser before anything runs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kai_drive.training.algos import ALGOS

EPILOG = """\
examples:
  python -m kai_drive.train --env lane-keep                      # default recipe (agents/ppo.yaml)
  python -m kai_drive.train --env lane-keep --algo sac --timesteps 50000
  python -m kai_drive.train --env lane-keep --set hyperparams.learning_rate=1e-4 \\
      --set env_config.sensors.camera.enabled=false --set policy_kwargs.net_arch=[128,128]
  python -m kai_drive.train --env lane-keep --recipe my_recipe.yaml --n-envs 4 --vec-env subproc
  python -m kai_drive.train --resume runs/lane-keep/ppo_3 --timesteps 500000   # continue a run
  python -m kai_drive.train --env lane-keep --init pretrained     # fine-tune the shipped agent (docs/models.md)
  tensorboard --logdir runs                                       # watch the curves

Road seeds: training draws roads in [0, 2^30); periodic evaluation uses roads 2^30 + i; the final
evaluation (--final-eval, final_eval.json) uses roads 2^30 + 2^29 + i, seen by neither.
Exit status: 0 done, 2 bad input (nothing written), 130 interrupted (checkpoint saved).
"""


def _nonneg_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _pos_int(text: str) -> int:
    value = _nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kai_drive.train",
        description="Train a Stable-Baselines3 agent on a kai-drive env; logs to TensorBoard, saves checkpoints, "
        "evaluates on held-out roads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", help="env alias or id, e.g. lane-keep or KaiDrive/LaneKeep-v0")
    p.add_argument("--algo", default=None, choices=ALGOS, help="algorithm (default: ppo)")
    p.add_argument("--timesteps", type=_pos_int, help="total env steps (default: the recipe's n_timesteps)")
    p.add_argument("--seed", type=_nonneg_int, default=None, help="random seed (default: 0)")
    p.add_argument("--n-envs", type=_pos_int, help="parallel training envs (default: the recipe's)")
    p.add_argument("--vec-env", choices=("subproc", "dummy"), help="subprocesses or one process (default: recipe's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default: auto)")
    p.add_argument("--recipe", type=Path, help="recipe YAML (default: agents/<algo>.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key (dotted, value parsed as YAML); repeatable",
    )
    p.add_argument("--eval-freq", type=_nonneg_int, help="env steps between evaluations (0 = none)")
    p.add_argument("--eval-episodes", type=_pos_int, help="episodes per periodic evaluation")
    p.add_argument("--final-eval", type=_nonneg_int, metavar="N", help="held-out episodes after training (0 = none)")
    p.add_argument("--checkpoint-freq", type=_nonneg_int, help="env steps between checkpoints (0 = only at the end)")
    p.add_argument("--log-folder", type=Path, default=Path("runs"), help="where run folders go (default: runs)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument(
        "--init",
        metavar="pretrained[:NAME]",
        help="fine-tune: start from a shipped agent's weights (pretrained = the env's agent; docs/models.md)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on when stdout is a terminal)",
    )
    p.add_argument("--verbose", action="store_true", help="also print SB3's log tables")
    return p
