"""Planning a sweep: the trials of ``python -m kai_drive.sweep`` from its flags, validated before Ray starts.

:func:`plan_sweep` turns the parsed sweep flags into a :class:`SweepPlan` -- the grid of seeds x
configurations (``--seeds``, ``--grid``) or an Optuna search space (``--search``) -- after checking every
configuration (grid) or the corners of the search space with a caller-given ``check`` (the sweep CLI passes
``kai_drive.train``'s own parser + :func:`kai_drive.training.trainer.prepare`).
"""

from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from kai_drive.distributed.sweep.trial import set_flags
from kai_drive.training.recipe import _yaml_number

METRICS = ("success_rate", "mean_return", "route_completion")
#: train flags the sweep owns
OWNED_TRAIN_FLAGS = {"--log-folder": "the sweep puts each trial in <sweep>/runs/<trial>", "--seed": "use --seed/--seeds of the sweep",
          "--resume": "use --resume SWEEP_DIR"}


class UsageError(Exception):
    """Bad sweep flags; the sweep CLI prints ``error: ...`` and exits with status 2."""


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
    try:
        return _yaml_number(text, yaml.safe_load(text))  # 1e-4 is a float here too, as with --set
    except yaml.YAMLError as exc:
        raise UsageError(f"{flag}: {text!r} is not valid YAML ({exc})") from None


def _key_value(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise UsageError(f"{flag} {item!r}: expected KEY=VALUES, e.g. {flag} hyperparams.learning_rate=1e-4,3e-4")
    return key.strip(), value.strip()


def parse_overrides(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``["hyperparams.gamma=0.98", "encoder={pretrained: null}"]`` -> ``{dotted key: YAML value}`` (a trial's
    overrides, as ``kai_drive.train --set`` reads them)."""
    out: dict[str, Any] = {}
    for item in items:
        key, text = _key_value(item, flag)
        out[key] = _yaml(text, f"{flag} {key}")
    return out


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
    engine: str = "ray"  # ray | serial
    made_by: str = "kai_drive.sweep"  # or kai_drive.experiments.ablation (sweep.json: who may resume it)
    resume_command: str = ""


def plan_sweep(args: argparse.Namespace, passthrough: list[str], argv: list[str], resume: Path | None,
               check: Callable[[list[str]], Any], arms: dict[str, dict[str, Any]] | None = None,
               seeds: list[int] | None = None) -> SweepPlan:
    """The plan of the parsed sweep flags ``args`` (``passthrough``: the flags for every trial's
    ``kai_drive.train``; ``argv``: the sweep's command line, saved in sweep.json; ``resume``: the sweep folder
    when resuming). ``check(train_argv)`` validates one trial's train command and returns its training plan
    (``env_id``, ``alias``, ``recipe``); it raises :class:`UsageError` for a bad one.

    ``arms`` (the ablation): named configurations ``{name: {dotted key: value}}`` in place of ``--grid``, each
    trained at every one of ``seeds`` (trials ``<name>_seed<s>``, seed-major)."""
    _check_flags(args, passthrough)
    if arms is not None and (args.grid or args.search):
        raise UsageError("named arms replace --grid and --search")
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
    configs: list[dict[str, Any]] = [{}]
    for key, values in grid.items():
        configs = [{**c, key: v} for c in configs for v in values]
    if arms is not None:
        configs = list(arms.values())
        clash = sorted({k for over in configs for k in over if any(a.startswith(k + "=") for a in passthrough)})
        if clash:
            raise UsageError(f"{', '.join(clash)}: set by an arm and with --set; drop one")
    # validate every configuration (grid) or the corners of the search space, with kai_drive.train itself
    probes = [{d.key: d.corners()[0] for d in search}, {d.key: d.corners()[-1] for d in search}] if search else configs
    check_dev = [] if device_given else ["--device", "cpu"]
    first = None
    for over in probes:
        plan = check(["--env", args.env, *base, *set_flags(over), *extra, *check_dev])
        first = first or plan
    recipe = first.recipe
    sweep_dir = _sweep_dir(args, first.alias, resume)
    max_t = int(recipe.n_timesteps)
    return SweepPlan(
        argv=list(argv), env_id=first.env_id, alias=first.alias, algo=args.algo, sweep_dir=Path(sweep_dir).resolve(),
        train_args=[*(["--recipe", str(Path(args.recipe).resolve())] if args.recipe else []), *extra],
        resume_args=[a for a in ("--no-progress",)] + _resume_flags(extra),
        grid_trials=None if search else (arm_trials(arms, seeds or [args.seed]) if arms is not None
                                         else grid_trials(configs, args.seed, args.seeds)), search=search or None,
        trials=args.trials, metric=args.metric, early_stop=args.early_stop, max_t=max_t,
        grace=args.grace_timesteps or max(1, max_t // 4), cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, default_cpus=float(recipe.n_envs if recipe.vec_env == "subproc" else 1),
        device_given=device_given, args=args, resume=resume is not None, engine=args.engine,
        resume_command=f"python -m kai_drive.sweep --resume {sweep_dir}",
    )


def _check_flags(args: argparse.Namespace, passthrough: list[str]) -> None:
    if not args.env:
        raise UsageError("--env is required (e.g. --env lane-keep), unless you --resume SWEEP_DIR")
    for flag, why in OWNED_TRAIN_FLAGS.items():
        if any(a == flag or a.startswith(flag + "=") for a in passthrough):
            raise UsageError(f"{flag} cannot be passed to the trials: {why}")
    if args.engine == "serial" and args.search:
        raise UsageError("--search runs on Ray Tune (Optuna + ASHA); use --engine ray, or --grid with --engine serial")
    if args.engine == "serial" and (args.address or args.cpus_per_trial or args.gpus_per_trial or args.max_concurrent):
        raise UsageError("--address, --cpus-per-trial, --gpus-per-trial and --max-concurrent are Ray settings; "
                         "the serial engine runs one trial at a time here")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        v = getattr(args, flag)
        if v is not None and (v < 0 or (flag == "cpus_per_trial" and v == 0)):
            raise UsageError(f"--{flag.replace('_', '-')} must be > 0, got {v}")


def _sweep_dir(args: argparse.Namespace, alias: str, resume: Path | None) -> Path:
    if args.name and ("/" in args.name or args.name.startswith(".")):
        raise UsageError(f"--name {args.name!r}: a plain folder name, please")
    if resume is not None:
        return resume
    name = args.name or f"{alias}-{args.algo}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    sweep_dir = args.sweep_root / name
    if sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise UsageError(f"{sweep_dir} exists already; continue it with --resume {sweep_dir} or pick another --name")
    return sweep_dir


def grid_trials(configs: list[dict[str, Any]], first_seed: int, seeds: int) -> list[dict]:
    """``[{"name", "overrides", "seed", "config"}]``: every configuration x every seed (``c01_seed2``)."""
    out = []
    for ci, over in enumerate(configs):
        for s in range(first_seed, first_seed + seeds):
            name = (f"c{ci:02d}_" if len(configs) > 1 else "") + f"seed{s}"
            out.append({"name": name, "overrides": over, "seed": s, "config": ci})
    return out

def arm_trials(arms: dict[str, dict[str, Any]], seeds: list[int]) -> list[dict]:
    """``[{"name", "overrides", "seed", "config"}]``: every named arm at every seed (``frozen_seed2``), seed-major
    (an interrupted serial run has every arm at the same seeds)."""
    names = list(arms)
    return [{"name": f"{a}_seed{s}", "overrides": arms[a], "seed": s, "config": names.index(a), "label": a}
            for s in seeds for a in names]


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


def read_sweep_json(sweep_dir: Path) -> dict:
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise UsageError(f"--resume {sweep_dir}: no sweep.json there (is it a folder made by kai_drive.sweep?)")
    return json.loads(path.read_text())


