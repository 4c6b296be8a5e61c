"""The flags of ``python -m kai_drive.sweep`` and the plan they make (a library module: the ablation plans its
trials with the same parser and checks)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from kai_drive.catalog import UnknownEnvError
from kai_drive.config import SpecError
from kai_drive.distributed.sweep.plan import METRICS, SweepPlan, UsageError, plan_sweep, read_sweep_json
from kai_drive.training.flags import build_parser as build_train_parser
from kai_drive.training.recipe import RecipeError

EPILOG = """\
examples:
  python -m kai_drive.sweep --env lane-keep --seeds 5                         # 5 seeds of agents/ppo.yaml
  python -m kai_drive.sweep --env lane-keep --seeds 3 --grid hyperparams.learning_rate=1e-4,3e-4,1e-3
  python -m kai_drive.sweep --env lane-keep --search hyperparams.learning_rate=1e-5:1e-3:log \\
      --search hyperparams.gae_lambda=0.9:0.99 --trials 20 --timesteps 100000   # Optuna TPE + ASHA
  python -m kai_drive.sweep --resume runs/sweeps/lane-keep-ppo-20250101-120000  # finish an interrupted sweep
  python -m kai_drive.sweep --env lane-keep --seeds 8 --address auto --cpus-per-trial 4   # on a cluster
  python -m kai_drive.sweep --env lane-keep --seeds 3 --engine serial          # one after the other, no Ray
  tensorboard --logdir runs/sweeps/<name>/runs                                 # all trials side by side

Any other flag goes to every trial's `python -m kai_drive.train` (e.g. --timesteps, --set KEY=VALUE,
--n-envs, --eval-freq, --final-eval). Values of --grid/--search are YAML (like --set); a list value keeps
its commas inside brackets: --grid policy_kwargs.net_arch=[64,64],[256,256].
--search KEY=LOW:HIGH (uniform; whole numbers -> integers), KEY=LOW:HIGH:log (log-uniform), KEY=A,B,C
(categorical). Exit status: 0 done, 1 some trials failed, 2 bad input, 130 interrupted (resumable).
"""

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kai_drive.sweep",
        description="Train many seeds / configurations of a kai-drive recipe as parallel Ray Tune trials (or one after the other).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--env", help="env alias or id, e.g. lane-keep")
    p.add_argument("--algo", default="ppo", help="algorithm (default: ppo)")
    p.add_argument("--recipe", type=Path, help="recipe YAML (default: agents/<algo>.yaml)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed (seeds are seed .. seed + seeds - 1)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="grid over a recipe key (repeatable: product)")
    p.add_argument("--search", action="append", default=[], metavar="KEY=LOW:HIGH[:log]",
                   help="Optuna TPE search space for a recipe key (repeatable)")
    p.add_argument("--trials", type=int, default=10, help="--search: number of trials (default: 10)")
    p.add_argument("--metric", choices=METRICS, default="success_rate",
                   help="what --search maximises and the best configuration is ranked by (ties: mean_return)")
    p.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True,
                   help="--search: stop bad trials early with ASHA (default: on)")
    p.add_argument("--grace-timesteps", type=int, help="ASHA: steps before a trial may be stopped (default: 1/4 of the run)")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the Optuna sampler (default: 0)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the recipe's n_envs if subproc, else 1; "
                   "at most the cluster's)")
    p.add_argument("--gpus-per-trial", type=float, help="GPU fraction per trial (default: share the cluster's GPUs "
                   "among the trials that fit, 0 without GPUs)")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at a time (default: as resources allow)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a trial whose worker died (default: 2)")
    p.add_argument("--engine", choices=("ray", "serial"), default="ray",
                   help="ray: trials in parallel on Ray Tune (default); serial: one after the other in this process, "
                   "no Ray needed (seeds and --grid only)")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    p.add_argument("--name", help="sweep name (default: <alias>-<algo>-<date>-<time>)")
    p.add_argument("--sweep-root", type=Path, default=Path("runs/sweeps"), help="where sweep folders go (default: runs/sweeps)")
    p.add_argument("--resume", type=Path, metavar="SWEEP_DIR", help="continue an interrupted sweep (finished trials are kept)")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


def train_check(argv: list[str]) -> Any:
    """Validate a trial's train command with kai_drive.train itself (parser + recipe + env spec)."""
    from kai_drive.training import trainer  # torch + SB3: only once a plan is checked (--help stays fast)

    parser = build_train_parser()
    try:
        targs = parser.parse_args(argv)
    except SystemExit:
        raise UsageError("the flags above are not valid for kai_drive.train (see python -m kai_drive.train --help)") from None
    try:
        return trainer.prepare(targs, argv)
    except (UnknownEnvError, RecipeError, SpecError, trainer.UsageError) as exc:
        raise UsageError(str(exc)) from None


def make_plan(argv: list[str]) -> SweepPlan:
    """Parse the sweep's flags (``--resume``: those saved in its sweep.json) and plan it."""
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    resume = None
    if args.resume is not None:
        resume = args.resume
        saved = read_sweep_json(resume)
        if saved.get("made_by", "kai_drive.sweep") != "kai_drive.sweep":
            raise UsageError(f"--resume {resume}: made by {saved['made_by']}; continue it with: {saved['command']}")
        runtime = {k: getattr(args, k) for k in ("address", "num_cpus", "max_concurrent", "poll")}
        if passthrough or any(getattr(args, k) not in (None, parser.get_default(k)) for k in
                              ("env", "grid", "search", "seeds", "recipe", "name", "engine")):
            raise UsageError("--resume SWEEP_DIR takes the sweep's own settings (sweep.json); only --address, "
                             "--num-cpus and --max-concurrent may be given with it")
        args, passthrough = parser.parse_known_args(saved["argv"])
        for k, v in runtime.items():
            if v is not None:
                setattr(args, k, v)
        argv = saved["argv"]
    return plan_sweep(args, passthrough, argv, resume, train_check)
