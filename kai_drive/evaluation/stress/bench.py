"""Benchmark the episodes a stress search runs: CPU seconds per full episode of the privileged scripted driver
(no camera or lidar), milliseconds per control step, the physics share, and a sha256 of every step's action,
reward and info, so that two code versions can be shown to give the same episodes bit for bit.

    python -m kai_drive.evaluation.stress.bench --env follow --episodes 8
    PYTHONPATH=/path/to/older/checkout python kai_drive/evaluation/stress/bench.py --env follow   # the older code

A benchmark, not a test: CPU time is what it measures (wall time too, but on a shared machine only the CPU time
means something). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time


def run(env_id: str, episodes: int, max_seconds: float | None = None, env_config: dict | None = None) -> dict:
    """Time ``episodes`` full scripted episodes (seeds 0..episodes-1) after one warm-up episode."""
    import numpy as np

    import kai_drive.sim.world as world_mod
    from kai_drive.evaluation.adapters import scripted_policy
    from kai_drive.evaluation.rollout import make_env, rollout

    cfg = {"sensors.camera.enabled": False, "sensors.lidar.enabled": False, **(env_config or {})}
    env = make_env(env_id, cfg)
    pol = scripted_policy(env_id)
    dt = 1.0 / float(env.metadata.get("render_fps", 20))
    max_steps = int(round(max_seconds / dt)) if max_seconds else None
    rollout(env, pol, 10_000, max_steps=max_steps)  # warm-up: imports, first-use caches
    physics = [0.0]
    step = world_mod.World.step

    def timed_step(self) -> None:
        t = time.process_time()
        step(self)
        physics[0] += time.process_time() - t

    world_mod.World.step = timed_step
    h = hashlib.sha256()
    steps = 0
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        for seed in range(episodes):
            tr = rollout(env, pol, seed, max_steps=max_steps)
            steps += tr.steps
            h.update(np.asarray(tr.actions, np.float32).tobytes())
            h.update(np.asarray(tr.rewards, np.float64).tobytes())
            h.update(json.dumps(tr.infos, sort_keys=True, default=str).encode())
    finally:
        world_mod.World.step = step
        env.close()
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"env": env_id, "episodes": episodes, "steps": steps, "cpu_s": cpu, "wall_s": wall,
            "cpu_s_per_episode": cpu / episodes, "ms_per_step": 1000 * cpu / max(steps, 1),
            "physics_ms_per_step": 1000 * physics[0] / max(steps, 1), "digest": h.hexdigest()[:16]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.evaluation.stress.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="follow")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=None, help="cut episodes at this simulated time (s)")
    args = ap.parse_args(argv)
    r = run(args.env, args.episodes, args.max_seconds)
    print(f"{r['env']}: {r['episodes']} scripted episodes, {r['steps']} steps: {r['cpu_s_per_episode']:.3f} s CPU per "
          f"episode, {r['ms_per_step']:.2f} ms CPU per step (physics {r['physics_ms_per_step']:.2f}); wall "
          f"{r['wall_s']:.1f} s for {r['cpu_s']:.1f} s CPU; digest {r['digest']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
