"""Steps/s of peer envs on this machine, single process, random actions (the figures quoted beside
kai-drive's in docs/performance.md). Install with benchmarks/requirements-peers.txt in a separate venv.

    python benchmarks/peers.py --seconds 10 [--json peers.json]

* bullet3's RacecarZEDGymEnv (pybullet_envs; a camera observation, TinyRenderer, no GUI);
* bullet3's KukaCamGymEnv and KukaDiverseObjectEnv (camera observations);
* highway-env's ``highway-fast-v0`` (its default kinematics observation).
A peer that fails to build is reported with its error instead of a number.
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def timed(reset, step, sample, seconds: float) -> float:
    reset()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done = step(sample())
        n += 1
        if done:
            reset()
    return n / (time.perf_counter() - t0)


def racecar_zed(seconds: float) -> float:
    from pybullet_envs.bullet.racecarZEDGymEnv import RacecarZEDGymEnv

    env = RacecarZEDGymEnv(renders=False, isDiscrete=False)
    return timed(env.reset, lambda a: env.step(a)[2], env.action_space.sample, seconds)


def kuka_cam(seconds: float) -> float:
    from pybullet_envs.bullet.kukaCamGymEnv import KukaCamGymEnv

    env = KukaCamGymEnv(renders=False, isDiscrete=False)
    return timed(env.reset, lambda a: env.step(a)[2], env.action_space.sample, seconds)


def kuka_diverse(seconds: float) -> float:
    from pybullet_envs.bullet.kuka_diverse_object_gym_env import KukaDiverseObjectEnv

    env = KukaDiverseObjectEnv(renders=False, isDiscrete=False)
    return timed(env.reset, lambda a: env.step(a)[2], env.action_space.sample, seconds)


def highway_fast(seconds: float) -> float:
    import gymnasium
    import highway_env  # noqa: F401  (registers highway-fast-v0)

    env = gymnasium.make("highway-fast-v0")
    env.reset(seed=0)

    def step(a):
        _, _, term, trunc, _ = env.step(a)
        return term or trunc

    return timed(lambda: env.reset(), step, env.action_space.sample, seconds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    res = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(), "steps_per_s": {}}
    for name, fn in (("RacecarZEDGymEnv", racecar_zed), ("KukaCamGymEnv", kuka_cam), ("KukaDiverseObjectEnv", kuka_diverse), ("highway-fast-v0", highway_fast)):
        try:
            res["steps_per_s"][name] = round(fn(args.seconds), 1)
        except Exception as exc:  # report the peer that does not build, keep timing the others
            res["steps_per_s"][name] = f"failed: {type(exc).__name__}: {exc}"
        print(f"| {name} | {res['steps_per_s'][name]} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
