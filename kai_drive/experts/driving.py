"""A scripted driving baseline: IDM (longitudinal) + pure pursuit (lateral).

PRIVILEGED: the policy does not use the observation. It reads the true scene from
``env.unwrapped.task`` -- the route geometry, the car's pose and speed, and the nearest relevant actor
ahead (:meth:`kai_drive.tasks.driving.LaneKeepTask.actor_ahead`: gap and speed of the lead car,
obstacle or a pedestrian about to cross). It is an upper reference that shows a scenario is fair and
solvable, not a learned-policy baseline. It keeps its start lane (no overtaking on the highway).

    python -m kai_drive.experts.driving --env follow --episodes 50

prints success / collision / off-road rates over episodes with seeds ``seed .. seed + episodes - 1``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from kai_drive.metrics import DrivingTally, summarize_episodes
from kai_drive.sim.traffic import IDMParams, idm_accel

__all__ = ["IDMPurePursuit", "scripted_driving_rates"]


class IDMPurePursuit:
    """``policy(obs) -> action`` for a driving env (privileged, see the module docstring).

    Args:
        env: a kai-drive driving env (gymnasium wrapper or ``KaiEnv``).
        speed_frac: desired speed as a fraction of the task's ``target_speed_mps``.
        idm: car-following parameters (time headway, gaps, accelerations).
    """

    def __init__(self, env, speed_frac: float = 0.9,
                 idm: IDMParams = IDMParams(max_accel_mps2=2.0, comfort_decel_mps2=3.0, time_headway_s=1.3,
                                            min_gap_m=4.0, max_decel_mps2=8.0)) -> None:
        self.env = env.unwrapped
        self.speed_frac = speed_frac
        self.idm = idm

    def __call__(self, obs: Any = None) -> np.ndarray:
        task = self.env.task
        ego = task.ego
        st = ego.state()
        p = ego.params
        route = task.route
        s, d_road, _ = route.project(st.x, st.y, st.yaw, s_hint=task.stats.s)
        v = max(st.speed_mps, 0.0)
        # -- lateral: pure pursuit on the start lane's centre, from the rear axle
        look = min(max(0.8 * v + 4.0, 6.0), 20.0)
        tx, ty, _ = route.pose_at(s + look, task.lane_offset)
        rx = st.x - ego.cg_to_rear_axle_m * math.cos(st.yaw)
        ry = st.y - ego.cg_to_rear_axle_m * math.sin(st.yaw)
        alpha = math.atan2(ty - ry, tx - rx) - st.yaw
        ld = math.hypot(tx - rx, ty - ry)
        delta = math.atan2(2.0 * p.wheelbase_m * math.sin(alpha), ld)
        steer = float(np.clip(delta / p.max_steer_rad, -1.0, 1.0))
        # -- longitudinal: IDM toward the desired speed behind the nearest relevant actor
        near = task.actor_ahead()
        v0 = self.speed_frac * task.t.target_speed_mps
        gap = near["gap_m"]
        dv = v - near["speed_mps"] if math.isfinite(gap) else 0.0
        a = idm_accel(v, v0, gap, dv, self.idm)
        if a >= 0.0:
            drive_acc = p.max_drive_torque_nm / (p.mass_kg * p.wheel_radius_m)
            cmd = a / drive_acc + 0.04  # + rolling/air resistance
        else:
            brake_acc = p.max_brake_torque_nm / (p.mass_kg * p.wheel_radius_m)
            cmd = a / brake_acc
        return np.array([steer, float(np.clip(cmd, -1.0, 1.0))], dtype=np.float32)


def scripted_driving_rates(env_name: str, episodes: int = 50, seed: int = 0, sensors: bool = False) -> dict[str, Any]:
    """Run the expert for ``episodes`` episodes (seeds ``seed ..``); returns :func:`kai_drive.metrics.summarize_episodes`
    of the per-episode driving metrics (:class:`kai_drive.metrics.DrivingTally`, as in training: success,
    collision, off-road, lane-invasion and timeout rates, ``route_completion_mean``, ...), collisions by kind
    and the median of the episodes' minimum TTC.
    Sensors are off unless ``sensors`` (the policy does not read them; the dynamics are the same)."""
    import gymnasium

    import kai_drive  # noqa: F401
    from kai_drive.catalog import resolve_env

    env_id, _ = resolve_env(env_name)
    cfg = {} if sensors else {"sensors": {"camera": {"enabled": False}, "lidar": {"enabled": False}}}
    env = gymnasium.make(env_id, config=cfg)
    policy = IDMPurePursuit(env)
    per_ep, min_ttc, steps_all = [], [], 0
    kinds: Counter = Counter()
    t0 = time.perf_counter()
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        tally, mttc = DrivingTally(), math.inf
        while True:
            obs, r, term, trunc, info = env.step(policy(obs))
            tally.step(r, info)
            mttc = min(mttc, info["ttc_s"])
            if term or trunc:
                break
        m = tally.finish(info, term, trunc, road_seed=seed + ep)
        per_ep.append(m)
        steps_all += m["length"]
        if info["collision"]:
            kinds[info["collision_with"]] += 1
        min_ttc.append(mttc)
    env.close()
    # the one summary of training-side episodes (kai_drive.metrics), plus what only this report shows
    res = summarize_episodes(per_ep, "driving")
    return {
        "env": env_id, "episodes": episodes, "seeds": [seed, seed + episodes - 1], **res,
        "collisions_by_kind": dict(kinds), "median_min_ttc_s": float(np.median(min_ttc)), "steps": steps_all,
        "wall_s": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.experts.driving", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", nargs="+", default=["follow"], help="env alias(es) or id(s)")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="first episode seed")
    ap.add_argument("--sensors", action="store_true", help="keep camera and lidar on (slower; same dynamics)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'env':22s} {'episodes':>8s} {'success':>8s} {'collision':>9s} {'off-road':>8s} {'lane-inv':>8s} "
          f"{'timeout':>8s} {'completion':>10s} {'med minTTC':>10s}  collisions")
    for name in args.env:
        r = scripted_driving_rates(name, args.episodes, args.seed, args.sensors)
        rows.append(r)
        print(f"{r['env']:22s} {r['episodes']:8d} {100 * r['success_rate']:7.0f}% {100 * r['collision_rate']:8.0f}% "
              f"{100 * r['off_road_rate']:7.0f}% {100 * r['lane_invasion_rate']:7.0f}% {100 * r['timeout_rate']:7.0f}% "
              f"{r['route_completion_mean']:10.3f} {r['median_min_ttc_s']:10.2f}  {r['collisions_by_kind']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
