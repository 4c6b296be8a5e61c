"""Parallel seeds on Ray vs the same seeds in series: speed-up and scheduling overhead per trial.

    python -m kai_drive.distributed.bench --seeds 2 --timesteps 2000

Three ways to train the same ``--seeds`` seeds with the same tiny flags:

* ``plain serial``: ``python -m kai_drive.train`` one after another, no Ray (the reference);
* ``ray serial``: ``python -m kai_drive.sweep`` on a 1-CPU local Ray (one trial at a time);
* ``ray parallel``: ``python -m kai_drive.sweep`` on a local Ray with one CPU per seed.

speed-up = plain serial / ray parallel; overhead per trial = (ray serial - plain serial) / seeds (Ray
start/stop, trial scheduling, polling, summary -- everything the sweep adds). Writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_FLAGS = ["--n-envs", "1", "--vec-env", "dummy", "--eval-freq", "1000", "--eval-episodes", "1",
               "--final-eval", "2", "--set", "eval.n_envs=1", "--no-progress"]


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.distributed.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="lane-keep")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--timesteps", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/sweep_bench.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="kai-sweep-bench-"))
    flags = ["--timesteps", str(args.timesteps), *TRAIN_FLAGS]
    py = sys.executable
    res: dict = {}
    t = 0.0
    for s in range(args.seeds):
        t += _timed([py, "-m", "kai_drive.train", "--env", args.env, "--seed", str(s), "--log-folder",
                     str(work / "plain"), *flags])
    res["plain_serial_s"] = t
    for name, cpus in (("ray_serial", 1), ("ray_parallel", args.seeds)):
        key = f"{name}_s"
        res[key] = _timed([py, "-m", "kai_drive.sweep", "--env", args.env, "--seeds", str(args.seeds), "--num-cpus",
                           str(cpus), "--cpus-per-trial", "1", "--name", name, "--sweep-root", str(work), *flags])
        trials = [json.loads(p.read_text()) for p in (work / name / "runs").glob("*/trial.json")]
        res[f"{name}_trial_wall_s"] = [round(tr["wall_time_s"], 1) for tr in trials]
    out = {
        "command": f"python -m kai_drive.distributed.bench --env {args.env} --seeds {args.seeds} --timesteps {args.timesteps}",
        "train_flags": flags,
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in res.items()},
        "speedup_parallel_vs_plain_serial": round(res["plain_serial_s"] / res["ray_parallel_s"], 2),
        "speedup_parallel_vs_ray_serial": round(res["ray_serial_s"] / res["ray_parallel_s"], 2),
        "overhead_per_trial_s": round((res["ray_serial_s"] - res["plain_serial_s"]) / args.seeds, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu(s), 1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
