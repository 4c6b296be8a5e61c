"""Multi-seed runs and hyperparameter sweeps on Ray: ``python -m kai_drive.sweep --env lane-keep --seeds 5``.

Every trial is a normal ``kai_drive.train`` run (same recipes, same run folders) under
``runs/sweeps/<name>/runs/<trial>/``; Ray Tune schedules them over a local Ray instance (started and
stopped here) or a cluster (``--address`` / ``$RAY_ADDRESS``). See docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  python -m kai_drive.sweep --env lane-keep --seeds 5                         # 5 seeds of agents/ppo.yaml
  python -m kai_drive.sweep --env lane-keep --seeds 3 --grid hyperparams.learning_rate=1e-4,3e-4,1e-3
  python -m kai_drive.sweep --env lane-keep --search hyperparams.learning_rate=1e-5:1e-3:log \\
      --search hyperparams.gae_lambda=0.9:0.99 --trials 20 --timesteps 100000   # Optuna TPE + ASHA
  python -m kai_drive.sweep --resume runs/sweeps/lane-keep-ppo-20250101-120000  # finish an interrupted sweep
  python -m kai_drive.sweep --env lane-keep --seeds 8 --address auto --cpus-per-trial 4   # on a cluster
  tensorboard --logdir runs/sweeps/<name>/runs                                 # all trials side by side

Any other flag goes to every trial's `python -m kai_drive.train` (e.g. --timesteps, --set KEY=VALUE,
--n-envs, --eval-freq, --final-eval). Values of --grid/--search are YAML (like --set); a list value keeps
its commas inside brackets: --grid policy_kwargs.net_arch=[64,64],[256,256].
--search KEY=LOW:HIGH (uniform; whole numbers -> integers), KEY=LOW:HIGH:log (log-uniform), KEY=A,B,C
(categorical). Exit status: 0 done, 1 some trials failed, 2 bad input, 130 interrupted (resumable).
"""

METRICS = ("success_rate", "mean_return", "route_completion")
#: train flags the sweep owns
_OWNED = {"--log-folder": "the sweep puts each trial in <sweep>/runs/<trial>", "--seed": "use --seed/--seeds of the sweep",
          "--resume": "use --resume SWEEP_DIR"}


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kai_drive.sweep",
        description="Train many seeds / configurations of a kai-drive recipe as parallel Ray Tune trials.",
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
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    p.add_argument("--name", help="sweep name (default: <alias>-<algo>-<date>-<time>)")
    p.add_argument("--sweep-root", type=Path, default=Path("runs/sweeps"), help="where sweep folders go (default: runs/sweeps)")
    p.add_argument("--resume", type=Path, metavar="SWEEP_DIR", help="continue an interrupted sweep (finished trials are kept)")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """Split at commas outside brackets/braces/quotes: ``[64,64],[128,128]`` -> two items."""
    out, depth, cur, quote = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def _yaml(text: str, flag: str) -> Any:
    import yaml

    from kai_drive.training.recipe import _yaml_number

    try:
        return _yaml_number(text, yaml.safe_load(text))  # 1e-4 is a float here too, as with --set
    except yaml.YAMLError as exc:
        raise UsageError(f"{flag}: {text!r} is not valid YAML ({exc})") from None


def _key_value(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise UsageError(f"{flag} {item!r}: expected KEY=VALUES, e.g. {flag} hyperparams.learning_rate=1e-4,3e-4")
    return key.strip(), value.strip()


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, text = _key_value(item, "--grid")
        if key in grid:
            raise UsageError(f"--grid {key}: given twice; put all values in one flag: {key}=V1,V2,...")
        grid[key] = [_yaml(v, f"--grid {key}") for v in split_values(text)]
    return grid


@dataclass
class Dim:
    """One --search dimension: ``kind`` uniform | loguniform | int | choice."""

    key: str
    kind: str
    low: Any = None
    high: Any = None
    choices: list = field(default_factory=list)

    def tune_domain(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(self.choices)
        if self.kind == "int":
            return tune.randint(self.low, self.high + 1)  # inclusive upper bound
        if self.kind == "lograndint":
            return tune.lograndint(self.low, self.high + 1)
        if self.kind == "loguniform":
            return tune.loguniform(self.low, self.high)
        return tune.uniform(self.low, self.high)

    def corners(self) -> list[Any]:
        return self.choices if self.kind == "choice" else [self.low, self.high]


def parse_search(items: list[str]) -> list[Dim]:
    dims: list[Dim] = []
    for item in items:
        key, text = _key_value(item, "--search")
        parts = text.split(":")
        if len(parts) in (2, 3) and all(_is_number(p) for p in parts[:2]):
            if len(parts) == 3 and parts[2] != "log":
                raise UsageError(f"--search {item!r}: the third part may only be 'log' (KEY=LOW:HIGH:log)")
            lo, hi = (int(p) if _is_int(p) else float(p) for p in parts[:2])
            if not lo < hi:
                raise UsageError(f"--search {key}: LOW must be < HIGH, got {lo} and {hi}")
            log = len(parts) == 3
            if log and lo <= 0:
                raise UsageError(f"--search {key}: a log range needs LOW > 0, got {lo}")
            whole = isinstance(lo, int) and isinstance(hi, int)
            kind = ("lograndint" if log else "int") if whole else ("loguniform" if log else "uniform")
            dims.append(Dim(key, kind, lo, hi))
        else:
            values = [_yaml(v, f"--search {key}") for v in split_values(text)]
            if len(values) < 2:
                raise UsageError(f"--search {item!r}: expected LOW:HIGH, LOW:HIGH:log or at least two choices A,B")
            dims.append(Dim(key, "choice", choices=values))
    return dims


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


@dataclass
class SweepPlan:
    """Everything resolved and validated before Ray starts."""

    argv: list[str]
    env_id: str
    alias: str
    algo: str
    sweep_dir: Path
    train_args: list[str]
    resume_args: list[str]
    grid_trials: list[dict] | None  # [{"name", "overrides", "seed", "config"}] (seeds / grid)
    search: list[Dim] | None
    trials: int
    metric: str
    early_stop: bool
    max_t: int
    grace: int
    cpus_per_trial: float | None
    gpus_per_trial: float | None
    default_cpus: float
    device_given: bool
    args: argparse.Namespace
    resume: bool = False


def _train_check(argv: list[str]) -> Any:
    """Validate a trial's train command with kai_drive.train itself (parser + recipe + env spec)."""
    from kai_drive import train
    from kai_drive.catalog import UnknownEnvError
    from kai_drive.specs import SpecError
    from kai_drive.training.recipe import RecipeError

    parser = train.build_parser()
    try:
        targs = parser.parse_args(argv)
    except SystemExit:
        raise UsageError("the flags above are not valid for kai_drive.train (see python -m kai_drive.train --help)") from None
    try:
        return train.prepare(targs, argv)
    except (UnknownEnvError, RecipeError, SpecError, train.UsageError) as exc:
        raise UsageError(str(exc)) from None


def make_plan(argv: list[str]) -> SweepPlan:
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    resume = False
    if args.resume is not None:
        sweep_dir = args.resume
        saved = _read_sweep_json(sweep_dir)
        runtime = {k: getattr(args, k) for k in ("address", "num_cpus", "max_concurrent", "poll")}
        if passthrough or any(getattr(args, k) not in (None, parser.get_default(k)) for k in
                              ("env", "grid", "search", "seeds", "recipe", "name")):
            raise UsageError("--resume SWEEP_DIR takes the sweep's own settings (sweep.json); only --address, "
                             "--num-cpus and --max-concurrent may be given with it")
        args, passthrough = parser.parse_known_args(saved["argv"])
        for k, v in runtime.items():
            if v is not None:
                setattr(args, k, v)
        argv = saved["argv"]
        resume = True
    if not args.env:
        raise UsageError("--env is required (e.g. --env lane-keep), unless you --resume SWEEP_DIR")
    for flag, why in _OWNED.items():
        if any(a == flag or a.startswith(flag + "=") for a in passthrough):
            raise UsageError(f"{flag} cannot be passed to the trials: {why}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        v = getattr(args, flag)
        if v is not None and (v < 0 or (flag == "cpus_per_trial" and v == 0)):
            raise UsageError(f"--{flag.replace('_', '-')} must be > 0, got {v}")
    grid = parse_grid(args.grid)
    search = parse_search(args.search)
    if search and (grid or args.seeds > 1):
        raise UsageError("--search samples one seed per trial; combine it with neither --grid nor --seeds. Re-run the "
                         "best configuration over seeds afterwards: --recipe <sweep>/best_recipe.yaml --seeds 5")
    clash = sorted(set(grid) | {d.key for d in search})
    for key in clash:
        if any(a.startswith(key + "=") for a in passthrough):
            raise UsageError(f"{key} is both swept and set with --set; drop one")

    base = ["--algo", args.algo] + (["--recipe", str(args.recipe)] if args.recipe else [])
    extra = list(passthrough)
    if not any(a in ("--progress", "--no-progress") for a in extra):
        extra.append("--no-progress")
    device_given = any(a == "--device" or a.startswith("--device=") for a in extra)

    # validate every configuration (grid) or the corners of the search space, with kai_drive.train itself
    from kai_drive.training.recipe import recipe_to_dict  # noqa: F401  (imports torch once, here)
    from kai_drive.distributed.trial import set_flags

    check_dev = [] if device_given else ["--device", "cpu"]
    configs: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        configs = [{**c, key: v} for c in configs for v in values]
    if search:
        probes = [{d.key: d.corners()[0] for d in search}, {d.key: d.corners()[-1] for d in search}]
    else:
        probes = configs
    first = None
    for over in probes:
        plan = _train_check(["--env", args.env, *base, *set_flags(over), *extra, *check_dev])
        first = first or plan
    recipe = first.recipe
    env_id, alias = first.env_id, first.alias
    if args.name and ("/" in args.name or args.name.startswith(".")):
        raise UsageError(f"--name {args.name!r}: a plain folder name, please")
    if not resume:
        name = args.name or f"{alias}-{args.algo}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        sweep_dir = args.sweep_root / name
        if sweep_dir.exists() and any(sweep_dir.iterdir()):
            raise UsageError(f"{sweep_dir} exists already; continue it with --resume {sweep_dir} or pick another --name")

    grid_trials = None
    if not search:
        grid_trials = []
        for ci, over in enumerate(configs):
            for s in range(args.seed, args.seed + args.seeds):
                name = (f"c{ci:02d}_" if len(configs) > 1 else "") + f"seed{s}"
                grid_trials.append({"name": name, "overrides": over, "seed": s, "config": ci})
    default_cpus = float(recipe.n_envs if recipe.vec_env == "subproc" else 1)
    max_t = int(recipe.n_timesteps)
    grace = args.grace_timesteps or max(1, max_t // 4)
    return SweepPlan(
        argv=list(argv), env_id=env_id, alias=alias, algo=args.algo, sweep_dir=Path(sweep_dir).resolve(),
        train_args=[*(["--recipe", str(Path(args.recipe).resolve())] if args.recipe else []), *extra],
        resume_args=[a for a in ("--no-progress",)] + _resume_flags(extra),
        grid_trials=grid_trials, search=search or None, trials=args.trials, metric=args.metric,
        early_stop=args.early_stop, max_t=max_t, grace=grace, cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, default_cpus=default_cpus, device_given=device_given, args=args,
        resume=resume,
    )


def _resume_flags(extra: list[str]) -> list[str]:
    """Flags kept when a trial resumes its run (the recipe itself comes from the run's config.yaml)."""
    out, i = [], 0
    while i < len(extra):
        a = extra[i]
        if a in ("--device", "--verbose") or a.startswith("--device="):
            out.append(a)
            if a == "--device" and i + 1 < len(extra):
                out.append(extra[i + 1])
                i += 1
        i += 1
    return out


def _read_sweep_json(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise UsageError(f"--resume {sweep_dir}: no sweep.json there (is it a folder made by kai_drive.sweep?)")
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from kai_drive.distributed import RayMissingError, require_ray

    try:
        plan = make_plan(argv)
        require_ray("python -m kai_drive.sweep", optuna=bool(plan.search))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RayMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from kai_drive.distributed.sweep import run_sweep

    command = "python -m kai_drive.sweep " + " ".join(shlex.quote(a) for a in argv)
    return run_sweep(plan, command)


if __name__ == "__main__":
    sys.exit(main())
