"""Behaviour fingerprint: hashes of what the package computes, to show that a refactor changed nothing.

Run it on two checkouts and compare the JSON (docs/architecture.md, "Checking a refactor"):

    git worktree add /tmp/before <old-commit>
    (cd /tmp/before && python scripts/fingerprint.py --out /tmp/fp-before.json)
    python scripts/fingerprint.py --out /tmp/fp-after.json --compare /tmp/fp-before.json

What is hashed (each in a fresh subprocess, so nothing is shared between parts):
- env rollouts: every registered KaiDrive env, 2 seeds, 40 steps of seeded random actions: observations,
  rewards, terminated/truncated and the numeric/str info values;
- a short lane-keep and grasp PPO training run (CPU, one process; grasp's imitation warm start cut to 3 demos): the saved policy parameters and the
  held-out final_eval.json numbers;
- an evaluation of the scripted driver (quick suite, 2 seeds): result.json without times and versions;
- an evaluation of the trained lane-keep run through --run (run-folder reading, SB3 loading).

Exit status: 0 identical (or no --compare), 1 some part differs.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROLLOUT = r"""
import hashlib, json, sys, numpy as np, gymnasium as gym, kai_drive
env_id, out = sys.argv[1], {}
h = hashlib.sha256()
def feed(x):
    if isinstance(x, dict):
        for k in sorted(x): h.update(str(k).encode()); feed(x[k])
    elif isinstance(x, (list, tuple)):
        for v in x: feed(v)
    elif isinstance(x, np.ndarray):
        h.update(str(x.dtype).encode()); h.update(np.ascontiguousarray(x).tobytes())
    elif isinstance(x, (bool, int, float, str, np.number, np.bool_)) or x is None:
        h.update(repr(x).encode())
env = gym.make(env_id)
for seed in (0, 1):
    obs, info = env.reset(seed=seed)
    feed(obs); feed(info)
    env.action_space.seed(seed)
    for _ in range(40):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        feed(obs); feed(float(r)); feed(bool(term)); feed(bool(trunc)); feed(info)
        if term or trunc:
            obs, info = env.reset(); feed(obs); feed(info)
env.close()
print(h.hexdigest())
"""

PARAMS = r"""
import hashlib, sys, torch
from stable_baselines3 import PPO
m = PPO.load(sys.argv[1], device="cpu")
h = hashlib.sha256()
for k, v in sorted(m.policy.state_dict().items()):
    h.update(k.encode()); h.update(v.detach().cpu().numpy().tobytes())
print(h.hexdigest())
"""

# fields that legitimately differ between two runs of the same computation
VOLATILE = {"time", "time_s", "wall_s", "seconds", "elapsed_s", "started", "finished", "date", "created",
            "host", "machine", "python", "versions", "version", "kai_drive_version", "git", "commit",
            "command", "argv", "out", "path", "run_dir", "steps_per_s", "fps", "duration_s"}


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in sorted(x.items()) if k not in VOLATILE and not k.endswith("_s")
                and "time" not in k and "path" not in k}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _py(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(cwd), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode not in (0, 1):
        raise RuntimeError(f"{args[:3]} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON of hashes to write")
    ap.add_argument("--compare", type=Path, help="a JSON written by an earlier run: report differences")
    ap.add_argument("--quick", action="store_true", help="env rollouts only")
    a = ap.parse_args(argv)
    root = Path.cwd()
    fp: dict[str, str] = {}
    import gymnasium
    import kai_drive  # noqa: F401
    for env_id in sorted(k for k in gymnasium.registry if k.startswith("KaiDrive/")):
        fp[f"rollout {env_id}"] = _py(["-c", ROLLOUT, env_id], root).strip().splitlines()[-1]
        print(f"{env_id}: {fp[f'rollout {env_id}']}", flush=True)
    if not a.quick:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for env in ("lane-keep", "grasp"):
                _py(["-m", "kai_drive.train", "--env", env, "--timesteps", "512", "--n-envs", "1",
                     "--vec-env", "dummy", "--device", "cpu", "--eval-freq", "0", "--final-eval", "2",
                     "--set", "hyperparams.n_steps=256", "--set", "hyperparams.batch_size=64",
                     "--no-progress", "--log-folder", str(tmp / "runs"),
                     *(["--set", "imitation.episodes=3", "--set", "imitation.epochs=1"] if env == "grasp" else [])],
                    root)
                run = next((tmp / "runs" / env).iterdir())
                model = run / "final_model.zip"
                fp[f"train {env} params"] = _py(["-c", PARAMS, str(model)], root).strip().splitlines()[-1]
                fe = json.loads((run / "final_eval.json").read_text())
                fp[f"train {env} final_eval"] = _digest(_clean(fe))
                print(f"train {env}: {fp[f'train {env} params']}", flush=True)
                if env == "lane-keep":
                    _py(["-m", "kai_drive.evaluate", "--run", str(run), "--suite", "quick", "--seeds", "2",
                         "--sections", "safety", "--videos", "0", "--no-baselines", "--no-progress",
                         "--out", str(tmp / "eval-run")], root)
                    res = json.loads((tmp / "eval-run" / "result.json").read_text())
                    fp["evaluate --run lane-keep"] = _digest(_clean(res))
            _py(["-m", "kai_drive.evaluate", "--env", "lane-keep", "--policy", "scripted", "--suite", "quick",
                 "--seeds", "2", "--videos", "0", "--no-progress", "--out", str(tmp / "eval")], root)
            res = json.loads((tmp / "eval" / "result.json").read_text())
            fp["evaluate scripted lane-keep"] = _digest(_clean(res))
            (a.out.with_suffix(".result.json")).write_text(json.dumps(_clean(res), indent=1, sort_keys=True))
    a.out.write_text(json.dumps(fp, indent=1, sort_keys=True))
    print(json.dumps(fp, indent=1, sort_keys=True))
    if a.compare:
        old = json.loads(a.compare.read_text())
        diff = [k for k in sorted(fp) if old.get(k) != fp[k]]  # --quick compares the rollouts only
        print("identical" if not diff else "DIFFERENT: " + ", ".join(diff))
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
