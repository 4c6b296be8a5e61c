"""RL ablation: does pretrained perception help? ``python -m kai_drive.experiments.ablation``.

Trains lane-keep with PPO (agents/ppo.yaml's default recipe and hyperparameters, camera + lidar + state, no privileged
inputs) under the same env-step budget, for each arm and seed, through the ordinary training CLI (one run
folder each, with TensorBoard events and ``final_eval.json``), then aggregates:

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
episodes within each seed), the pooled Wilson interval, and the training wall clock (``status.json``).
Results go to ``<out>/ablation.json`` and ``<out>/ablation.md``. Runs already finished in ``<out>`` are
reused (re-running continues an interrupted ablation). Run it on a quiet machine: wall clock is a result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kai_drive.stats import two_level_bootstrap, wilson_interval
from kai_drive.training.runs import RunFolder

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


#: the keys of each run's and arm's "failures" count ("other": failed with none of the four, e.g. still running)
FAILURE_MODES = ("lane_invasion", "collision", "off_road", "time_out", "other")


def _succeeded(episode: dict[str, Any]) -> bool:
    return bool(episode.get("success", episode.get("is_success", False)))


def failure_mode(episode: dict[str, Any]) -> str | None:
    """Why a strict-success episode failed (the first that applies: collision, off-road, lane invasion,
    time-out); None for a success. A time-out with no infraction is the "stop trap" (crawling to the limit)."""
    if _succeeded(episode):
        return None
    if episode.get("collision"):
        return "collision"
    if episode.get("off_road"):
        return "off_road"
    if episode.get("lane_invasions"):
        return "lane_invasion"
    if episode.get("truncated"):
        return "time_out"
    return "other"


def finished_runs(folder: Path) -> list[RunFolder]:
    """The lane-keep PPO runs under ``folder`` (an arm's seed) that wrote their final evaluation, oldest first."""
    return [r for r in RunFolder.all_in(folder, "ppo", "lane-keep") if r.file(RunFolder.FINAL_EVAL).is_file()]


def run_arm(arm: str, seed: int, out: Path, timesteps: int, episodes: int, extra: list[str]) -> dict[str, Any]:
    """Train one arm at one seed (``python -m kai_drive.train`` in a subprocess: a fresh process per run, as
    the wall clock is a result) unless a finished run is there already; its successes, failures, wall clock."""
    folder = out / arm / f"seed{seed}"
    done = finished_runs(folder)
    if not done:
        sets = ARMS[arm] + COMMON + [f"eval.final_episodes={episodes}"] + extra
        cmd = [sys.executable, "-m", "kai_drive.train", "--env", "lane-keep", "--seed", str(seed),
               "--timesteps", str(timesteps), "--log-folder", str(folder), "--no-progress"]
        for s in sets:
            cmd += ["--set", s]
        print(f"[{time.strftime('%H:%M:%S')}] {arm} seed {seed}: {' '.join(cmd[1:])}", flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        done = finished_runs(folder)
    run = done[-1]
    ev, status = run.final_eval(), run.status()
    flags = [float(_succeeded(e)) for e in ev["per_episode"]]
    return {
        "arm": arm, "seed": seed, "run": str(run.path), "timesteps": status["timesteps"],
        "train_wall_time_s": status["train_wall_time_s"], "successes": int(sum(flags)), "episodes": len(flags),
        "success_flags": flags, "route_completion_mean": ev.get("route_completion_mean"),
        "failures": {m: sum(failure_mode(e) == m for e in ev["per_episode"]) for m in FAILURE_MODES},
    }


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
        fails = f"{f['lane_invasion']} / {f['collision'] + f['off_road']} / {f['time_out']}" + (
            f" (+{f['other']} other)" if f["other"] else "")
        lines.append(
            f"| {arm} | {per} | **{100 * a['success_mean']:.1f} %** ({100 * lo:.1f}–{100 * hi:.1f}) | "
            f"{a['pooled']} ({100 * wl:.1f}–{100 * wh:.1f} %) | {fails} | {a['train_wall_time_s_mean']:.0f} s ({walls}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kai_drive.experiments.ablation", description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--timesteps", type=int, default=30_000, help="env steps per run (the fixed budget)")
    p.add_argument("--episodes", type=int, default=30, help="held-out roads in each run's final evaluation")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra recipe override, all arms")
    p.add_argument("--summary-only", action="store_true", help="train nothing: summarise the finished runs in --out")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:  # seed-major: an interrupted ablation has every arm at the same seeds
        for arm in args.arms:
            if args.summary_only and not finished_runs(args.out / arm / f"seed{seed}"):
                print(f"  {arm} seed {seed}: not run")
                continue
            r = run_arm(arm, seed, args.out, args.timesteps, args.episodes, args.set)
            print(f"  {arm} seed {seed}: {r['successes']}/{r['episodes']}, {r['train_wall_time_s']:.0f} s", flush=True)
            results.append(r)
    arms = summarise(results)
    payload = {"timesteps": args.timesteps, "episodes": args.episodes, "arms": arms, "runs": results}
    (args.out / "ablation.json").write_text(json.dumps(payload, indent=1))
    md = markdown(arms, args.timesteps, args.episodes)
    (args.out / "ablation.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
