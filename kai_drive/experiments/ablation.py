"""RL ablation: does pretrained perception help? ``python -m kai_drive.experiments.ablation``.

Trains lane-keep with PPO (agents/ppo.yaml's default recipe and hyperparameters, camera + lidar + state, no privileged
inputs) under the same env-step budget, for each arm and seed, as the trials of a sweep
(:mod:`kai_drive.distributed.sweep`: one ``kai_drive.train`` run folder each, with TensorBoard events and
``final_eval.json``; ``--engine serial`` -- the default, one run at a time -- or ``--engine ray``), then aggregates:

==================  =========================================================================================
arm                 what the policy sees the camera / lidar / state through
==================  =========================================================================================
``scratch``         SB3's ``CombinedExtractor``: NatureCNN on the camera, trained from scratch (+ flatten)
``scratch_shift``   the same with DrQ random-shift augmentation during updates (the strong baseline)
``frozen``          the shipped pretrained encoders, frozen; the agent is an MLP on embeddings (``EncodedVecEnv``)
``finetune``        the shipped pretrained encoders inside the policy, trained with it (``PerceptionExtractor``)
``finetune_lowlr``  the same, the encoder at 0.1x the heads' learning rate (``lr_scale: 0.1``, ``ScaledLRAdam``)
``finetune_split``  the same, actor and critic each with their own encoder copy (``share_features_extractor: false``)
``frozen_random``   control: a frozen *random-init* encoder of the same shape (isolates what pretraining adds)
==================  =========================================================================================

Per arm: strict success on held-out roads (mean over seeds, 95 % two-level bootstrap CI: seeds resampled, then
episodes within each seed), the pooled Wilson interval, how the failed episodes ended (the outcome classes of
:func:`kai_drive.metrics.episode_outcome`) and the training wall clock (``status.json``). Results go to
``<out>/ablation.json`` and ``<out>/ablation.md`` (beside the sweep's own summary.md); the trials' run folders
are ``<out>/runs/<arm>_seed<s>/``. Runs already finished in ``<out>`` are reused (re-running continues an
interrupted ablation). Run it on a quiet machine and serially: wall clock is a result.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kai_drive.distributed import RayMissingError, require_ray
from kai_drive.distributed.sweep.engine import run_sweep
from kai_drive.distributed.sweep.flags import build_parser, train_check
from kai_drive.distributed.sweep.plan import SweepPlan, UsageError, parse_overrides, plan_sweep
from kai_drive.distributed.sweep.trial import trial_folder
from kai_drive.stats import two_level_bootstrap, wilson_interval
from kai_drive.training.runs import RunFolder, write_json, write_text

#: recipe overrides (``--set`` syntax) per arm, on top of agents/ppo.yaml's lane-keep recipe
ARMS: dict[str, list[str]] = {
    "scratch": [
        "policy=MultiInputPolicy",
        "encoder=null",
        "normalisation.norm_obs=true",  # lidar + state; VecNormalize never touches images
        "policy_kwargs.features_extractor_class=combined",
    ],
    "scratch_shift": [
        "policy=MultiInputPolicy",
        "encoder=null",
        "normalisation.norm_obs=true",
        "policy_kwargs.features_extractor_class=combined_shift",
        "policy_kwargs.features_extractor_kwargs={pad: 4}",
    ],
    "frozen": [
        "policy=MlpPolicy",
        "encoder={pretrained: lane-keep, device: auto}",
        "normalisation.norm_obs=false",
    ],
    "finetune": [
        "policy=MultiInputPolicy",
        "encoder=null",
        "policy_kwargs.features_extractor_class=perception",
        "policy_kwargs.features_extractor_kwargs={pretrained: lane-keep, freeze: false}",
        # the encoders standardise their own inputs (as in pretraining); VecNormalize would shift them
        "normalisation.norm_obs=false",
    ],
    # fine-tuning variants (docs/results.md: plain fine-tuning was unstable): the encoder learns 10x slower than
    # the heads (ScaledLRAdam), and / or actor and critic each get their own copy of the pretrained encoder
    "finetune_lowlr": [
        "policy=MultiInputPolicy",
        "encoder=null",
        "policy_kwargs.features_extractor_class=perception",
        "policy_kwargs.features_extractor_kwargs={pretrained: lane-keep, freeze: false, lr_scale: 0.1}",
        "normalisation.norm_obs=false",
    ],
    "finetune_split": [
        "policy=MultiInputPolicy",
        "encoder=null",
        "policy_kwargs.features_extractor_class=perception",
        "policy_kwargs.features_extractor_kwargs={pretrained: lane-keep, freeze: false}",
        "policy_kwargs.share_features_extractor=false",
        "normalisation.norm_obs=false",
    ],
    "frozen_random": [
        "policy=MlpPolicy",
        "encoder={pretrained: null, device: auto}",
        "normalisation.norm_obs=false",
    ],
}
DEFAULT_ARMS = ("scratch", "scratch_shift", "frozen", "finetune")
#: the same for every arm: camera on, no periodic evaluation (so the wall clock is training alone); all other
#: settings (PPO hyperparameters, 4 subprocess envs, one torch thread in the learner) are the default recipe's
COMMON = ["env_config.sensors.camera.enabled=true", "eval.freq=0"]


#: how the failed episodes of a run / an arm ended (:func:`kai_drive.metrics.episode_outcome`; ``collision`` = any
#: ``collision:<kind>``; ``timeout`` without an infraction is the "stop trap", crawling to the time limit)
FAILURE_MODES = ("lane_invasion", "collision", "off_road", "timeout", "other")


def _succeeded(episode: dict[str, Any]) -> bool:
    return bool(episode.get("success", episode.get("is_success", False)))


def failure_mode(episode: dict[str, Any]) -> str | None:
    """The outcome class of a failed episode of ``final_eval.json`` (its ``outcome``, the one vocabulary of
    :mod:`kai_drive.metrics`); None for a success."""
    if _succeeded(episode):
        return None
    outcome = str(episode.get("outcome", ""))
    if outcome.startswith("collision"):
        return "collision"
    return outcome if outcome in FAILURE_MODES else "other"


def arm_overrides(arms: list[str], extra: list[str], episodes: int) -> dict[str, dict[str, Any]]:
    """``{arm: {dotted recipe key: value}}``: each arm's settings, then what every arm shares (``extra``, the
    user's ``--set``, last: it wins over an arm's own value, as on the training command line)."""
    common = parse_overrides(COMMON + [f"eval.final_episodes={episodes}"] + extra)
    return {a: {**parse_overrides(ARMS[a]), **common} for a in arms}


def plan(args: argparse.Namespace, command: str) -> SweepPlan:
    """The ablation as a sweep plan: arms x seeds, one lane-keep PPO trial each, validated before anything runs."""
    out = args.out.resolve()
    if out.is_dir() and any(out.iterdir()) and not (out / "sweep.json").is_file():
        raise UsageError(f"--out {args.out}: holds files but no sweep.json (an ablation of an older version, "
                         "<arm>/seed<s>/ folders?); pick a new --out")
    runtime = [f"--{k.replace('_', '-')}={v}" for k in ("address", "num_cpus", "max_concurrent") if
               (v := getattr(args, k)) is not None]
    sweep_args, rest = build_parser().parse_known_args(
        ["--env", "lane-keep", "--algo", "ppo", "--engine", args.engine, "--name", out.name,
         "--sweep-root", str(out.parent), *runtime])
    passthrough = ["--timesteps", str(args.timesteps), "--no-progress"]
    p = plan_sweep(sweep_args, rest + passthrough, shlex.split(command), out if (out / "sweep.json").is_file() else None,
                   train_check, arms=arm_overrides(args.arms, args.set, args.episodes), seeds=args.seeds)
    # a re-run continues: finished trials are reused, checkpointed ones resumed (a new Tuner on Ray: the arms
    # or seeds may differ from the last call's)
    p.resume, p.made_by, p.resume_command = False, "kai_drive.experiments.ablation", command
    return p


def arm_results(p: SweepPlan) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished trial (successes, failures, wall clock from its run folder) and the unfinished ones."""
    rows, missing = [], []
    spec = {"sweep_dir": str(p.sweep_dir)}
    for t in p.grid_trials:
        arm = t["name"].rsplit("_seed", 1)[0]
        run = RunFolder.newest(trial_folder(spec, t["name"]), "ppo")
        ev = run.final_eval() if run is not None else None
        if not ev:
            missing.append(t["name"])
            continue
        status = run.status()
        flags = [float(_succeeded(e)) for e in ev["per_episode"]]
        rows.append({
            "arm": arm, "seed": t["seed"], "run": str(run.path), "timesteps": status["timesteps"],
            "train_wall_time_s": status["train_wall_time_s"], "successes": int(sum(flags)), "episodes": len(flags),
            "success_flags": flags, "route_completion_mean": ev.get("route_completion_mean"),
            "failures": {m: sum(failure_mode(e) == m for e in ev["per_episode"]) for m in FAILURE_MODES},
        })
    return rows, missing


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in results):
        rows = [r for r in results if r["arm"] == arm]
        per_seed = [r["success_flags"] for r in rows]
        rates = [float(np.mean(f)) for f in per_seed]
        k, n = sum(r["successes"] for r in rows), sum(r["episodes"] for r in rows)
        walls = [r["train_wall_time_s"] for r in rows]
        arms[arm] = {
            "seeds": [r["seed"] for r in rows],
            "success_per_seed": rates,
            "success_mean": float(np.mean(rates)),
            "success_mean_ci95": two_level_bootstrap(per_seed),
            "pooled": f"{k}/{n}",
            "pooled_wilson95": wilson_interval(k, n),
            "train_wall_time_s_mean": float(np.mean(walls)),
            "train_wall_time_s": walls,
            "timesteps": [r["timesteps"] for r in rows],
            "failures": {m: sum(r.get("failures", {}).get(m, 0) for r in rows) for m in FAILURE_MODES},
        }
    return arms


def markdown(arms: dict[str, Any], timesteps: int, episodes: int) -> str:
    lines = [
        f"PPO on lane-keep, camera + lidar + state, {timesteps:,} env steps per run, strict success on "
        f"{episodes} held-out roads per run.",
        "",
        "| arm | success per seed | mean (95 % bootstrap CI) | pooled (Wilson 95 %) | failures: lane invasion / "
        "collision or off-road / time-out | train wall clock per run |",
        "|---|---|---|---|---|---|",
    ]
    for arm, a in arms.items():
        lo, hi = a["success_mean_ci95"]
        wl, wh = a["pooled_wilson95"]
        per = ", ".join(f"{100 * x:.0f} %" for x in a["success_per_seed"])
        walls = ", ".join(f"{w:.0f}" for w in a["train_wall_time_s"])
        f = a["failures"]
        fails = f"{f['lane_invasion']} / {f['collision'] + f['off_road']} / {f['timeout']}" + (
            f" (+{f['other']} other)" if f["other"] else "")
        lines.append(
            f"| {arm} | {per} | **{100 * a['success_mean']:.1f} %** ({100 * lo:.1f}–{100 * hi:.1f}) | "
            f"{a['pooled']} ({100 * wl:.1f}–{100 * wh:.1f} %) | {fails} | {a['train_wall_time_s_mean']:.0f} s ({walls}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m kai_drive.experiments.ablation", description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--timesteps", type=int, default=30_000, help="env steps per run (the fixed budget)")
    p.add_argument("--episodes", type=int, default=30, help="held-out roads in each run's final evaluation")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe override, all arms")
    p.add_argument("--engine", choices=("serial", "ray"), default="serial",
                   help="serial: one run at a time (default; the wall clock is a result); ray: parallel Ray Tune trials")
    p.add_argument("--num-cpus", type=int, help="--engine ray: CPUs of the local Ray instance")
    p.add_argument("--max-concurrent", type=int, help="--engine ray: at most this many runs at a time")
    p.add_argument("--address", help="--engine ray: Ray cluster to join")
    p.add_argument("--summary-only", action="store_true", help="train nothing: summarise the finished runs in --out")
    args = p.parse_args(argv)
    command = "python -m kai_drive.experiments.ablation " + " ".join(shlex.quote(a) for a in argv)
    try:
        sweep = plan(args, command)
        if args.engine == "ray" and not args.summary_only:
            require_ray("python -m kai_drive.experiments.ablation --engine ray")
    except (UsageError, RayMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rc = 0 if args.summary_only else run_sweep(sweep, command)
    rows, missing = arm_results(sweep)
    for name in missing:
        print(f"  {name}: not finished")
    arms = summarise(rows)
    payload = {"command": command, "timesteps": args.timesteps, "episodes": args.episodes, "arms": arms,
               "runs": rows, "not_finished": missing}
    write_json(sweep.sweep_dir / "ablation.json", payload)
    md = markdown(arms, args.timesteps, args.episodes)
    write_text(sweep.sweep_dir / "ablation.md", md)
    print(md)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
