"""A scripted grasp policy for ``KaiDrive/Grasp-v0`` that uses privileged object poses.

It proves the env is solvable and produces demonstrations::

    python -m kai_drive.experts.grasp --episodes 100 --split train
    python -m kai_drive.experts.grasp --episodes 100 --split test --demos demos_test.npz

Per episode: pick the object whose top is highest (ties: nearest the gripper), find the yaw at which
its points (world frame, from the simulator) are narrowest across the fingers, move above it, rotate,
descend, close, lift, hold. If the object slips out, open and try again while time remains.
Actions are ordinary env actions (``Box([-1, 1]^5)``), so the recorded (obs, action) pairs are valid
demonstrations for imitation or offline RL.

In assisted mode (``task.assisted``, action ``(dx, dy, dyaw)``) it steers above the object nearest to
the gripper, at the grasp yaw needing the least turn (:func:`grasp_near`), while the env descends:
labels that a camera can predict, for imitation (:mod:`kai_drive.training.imitation`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np

from kai_drive.stats import wilson_interval

__all__ = ["ScriptedGraspPolicy", "run_episodes", "grasp_for", "grasp_near"]



def _top_down_grasps(points: np.ndarray, yaw_step_rad: float, include_end: bool) -> list[tuple[float, float, float, float]]:
    """``(width, yaw, x, y)`` of the top-down grasp at each yaw from -pi/2 in steps of ``yaw_step_rad``
    (up to pi/2, included with ``include_end``): the object's extent across the fingers and the centre
    of its bounding box in the gripper's axes. The closing axis at yaw ``y`` is ``(-sin y, cos y)``
    (see :mod:`kai_drive.sim.arm`)."""
    xy = points[:, :2]
    out = []
    for yaw in np.arange(-math.pi / 2, math.pi / 2 + (1e-9 if include_end else 0.0), yaw_step_rad):
        a = np.array([-math.sin(yaw), math.cos(yaw)])
        b = np.array([math.cos(yaw), math.sin(yaw)])
        pa, pb = xy @ a, xy @ b
        centre = 0.5 * (pa.max() + pa.min()) * a + 0.5 * (pb.max() + pb.min()) * b
        out.append((float(pa.max() - pa.min()), float(yaw), float(centre[0]), float(centre[1])))
    return out


def grasp_for(points: np.ndarray, yaw_step_rad: float = math.radians(5)) -> tuple[float, float, float, float]:
    """Narrowest top-down grasp of a point cloud (N, 3): ``(x, y, yaw, width)`` (the first yaw, from
    -pi/2, within 1e-6 m of the narrowest width)."""
    best = None
    for width, yaw, x, y in _top_down_grasps(points, yaw_step_rad, include_end=False):
        if best is None or width < best[3] - 1e-6:
            best = (x, y, yaw, width)
    return best


def grasp_near(points: np.ndarray, current_yaw: float, slack_m: float = 0.01,
               yaw_step_rad: float = math.radians(5)) -> tuple[float, float, float]:
    """The top-down grasp ``(x, y, yaw)`` needing the least rotation from ``current_yaw``: among the yaws
    in [-pi/2, pi/2] at which the object is at most ``slack_m`` wider across the fingers than at its
    narrowest, the one closest to ``current_yaw``. Unlike :func:`grasp_for` it is a smooth, unambiguous
    function of what a camera sees (a round object needs no rotation; no flips between +-pi/2), which
    makes its actions learnable labels for imitation."""
    cands = _top_down_grasps(points, yaw_step_rad, include_end=True)
    narrowest = min(c[0] for c in cands)
    ok = [c for c in cands if c[0] <= narrowest + slack_m]
    _, yaw, x, y = min(ok, key=lambda c: abs(c[1] - current_yaw))
    return x, y, yaw


class ScriptedGraspPolicy:
    """Closed-loop scripted grasping with privileged state (``env.unwrapped.task``).

    Call :meth:`reset` after each ``env.reset`` and :meth:`act` every step.
    """

    def __init__(self, env: Any, hover_m: float = 0.07, close_s: float = 0.35, carry_height_m: float = 0.25) -> None:
        self.env = env
        self.hover_m = hover_m
        self.close_s = close_s
        self.carry_height_m = carry_height_m
        self.reset()

    def reset(self) -> None:
        self.phase = "approach"
        self.phase_steps = 0
        self.target: int | None = None
        self.plan: tuple[float, float, float, float] | None = None

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def task(self):
        return self.env.unwrapped.task

    def _reachable(self):
        """``(index, points, centroid)`` of every object still in the tray and within reach."""
        from kai_drive.tasks.grasping import FLOOR_Z, TRAY_CENTER

        task = self.task
        for i in range(len(task.objects)):
            pts = task.object_points_world(i)
            c = pts.mean(axis=0)
            if max(abs(c[0] - TRAY_CENTER[0]), abs(c[1] - TRAY_CENTER[1])) > task.t.workspace_half_m + 0.02:
                continue  # out of reach (or out of the tray)
            if c[2] < FLOOR_Z - 0.02:
                continue
            yield i, pts, c

    def _choose(self) -> int | None:
        """The object whose top is highest (to the cm), ties: nearest the gripper."""
        ee = self.task.ego.ee_pose()[:3]
        best, key = None, None
        for i, pts, c in self._reachable():
            k = (-round(pts[:, 2].max(), 2), float(np.linalg.norm(c[:2] - ee[:2])))
            if key is None or k < key:
                best, key = i, k
        return best

    def _nearest(self) -> int | None:
        """The reachable object nearest to the gripper in x, y (assisted mode: what a camera shows
        unambiguously; heights need not be compared)."""
        ee = self.task.ego.target[:2]
        best, dist = None, math.inf
        for i, _, c in self._reachable():
            d = float(np.hypot(c[0] - ee[0], c[1] - ee[1]))
            if d < dist:
                best, dist = i, d
        return best

    def _grasp_plan(self, i: int) -> tuple[float, float, float, float]:
        """(x, y, z_grasp, yaw) of the end effector for object ``i``."""
        task = self.task
        pts = task.object_points_world(i)
        x, y, yaw, _ = grasp_for(pts)
        top, bottom = pts[:, 2].max(), pts[:, 2].min()
        # fingertips ~1 cm below the grasp point: aim 3.5 cm below the top, at least 1 cm above the bottom
        z = max(top - 0.035, bottom + 0.012, task.ws_low[2])
        return x, y, z, yaw

    def _to(self, goal: np.ndarray, grip: float) -> np.ndarray:
        task = self.task
        t = task.t
        cur = task.ego.target
        d = np.asarray(goal, dtype=np.float64) - cur
        a = np.zeros(5, dtype=np.float32)
        a[:3] = np.clip(d[:3] / t.max_step_m, -1, 1)
        a[3] = np.clip(d[3] / t.max_yaw_step_rad, -1, 1)
        a[4] = grip
        return a

    # -- acting ----------------------------------------------------------------------------------
    def act(self, obs: Any = None) -> np.ndarray:
        if self.task.t.assisted:
            return self._act_assisted()
        task = self.task
        ee = task.ego.ee_pose()
        cur = task.ego.target
        from kai_drive.tasks.grasping import FLOOR_Z

        self.phase_steps += 1
        dt = 1.0 / task.control_hz
        if self.phase == "approach":
            if self.target is None or self.phase_steps % 5 == 1:
                self.target = self._choose()
            if self.target is None:
                return self._to(np.array([cur[0], cur[1], FLOOR_Z + 0.2, cur[3]]), -1.0)
            x, y, z, yaw = self._grasp_plan(self.target)
            goal = np.array([x, y, z + self.hover_m, yaw])
            if np.abs(goal[:2] - ee[:2]).max() < 0.008 and abs(goal[3] - ee[3]) < 0.06 and abs(goal[2] - ee[2]) < 0.02:
                self.phase, self.phase_steps, self.plan = "descend", 0, (x, y, z, yaw)
            return self._to(goal, -1.0)
        if self.phase == "descend":
            x, y, z, yaw = self._grasp_plan(self.target)
            goal = np.array([x, y, z, yaw])
            if abs(ee[2] - z) < 0.006 or self.phase_steps > 15:
                self.phase, self.phase_steps = "close", 0
            return self._to(goal, -1.0)
        if self.phase == "close":
            if self.phase_steps * dt >= self.close_s:
                self.phase, self.phase_steps = "lift", 0
            return self._to(cur, 1.0)
        if self.phase == "lift":
            goal = np.array([cur[0], cur[1], FLOOR_Z + self.carry_height_m, cur[3]])
            if self.phase_steps > 4 and task.ego.gripper_opening() < 0.002:
                self.phase, self.phase_steps, self.target = "approach", 0, None  # missed: closed on nothing
                return self._to(goal, -1.0)
            return self._to(goal, 1.0)
        raise RuntimeError(f"unknown phase {self.phase}")

    def acting(self) -> bool:
        """Whether the env uses the next action (assisted mode ignores it once the descent is over)."""
        return not self.task.t.assisted or self.task.stats.phase == "descend"

    def _act_assisted(self) -> np.ndarray:
        """Assisted mode (``Box([-1, 1]^3)`` = dx, dy, dyaw): steer above the chosen object's grasp point
        at its grasp yaw while the env descends; re-choose every 5 steps (objects may be nudged)."""
        task = self.task
        self.phase_steps += 1
        a = np.zeros(3, dtype=np.float32)
        if task.stats.phase != "descend":
            return a  # the env closes and lifts by itself; actions are ignored
        if self.target is None or self.phase_steps % 5 == 1:
            self.target = self._nearest()
        if self.target is None:
            return a
        x, y, yaw = grasp_near(task.object_points_world(self.target), float(task.ego.target[3]))
        b = self._to(np.array([x, y, task.ego.target[2], yaw]), 0.0)
        a[:2], a[2] = b[:2], b[3]
        return a


def run_episodes(  # long: one loop over episodes that also records the demonstrations, step by step
    episodes: int,
    split: str = "train",
    seed: int = 0,
    config: dict | None = None,
    demos: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the scripted policy for ``episodes`` episodes (seeds ``seed .. seed+episodes-1``)."""
    import gymnasium

    import kai_drive  # noqa: F401

    cfg = dict(config or {})
    cfg["task.object_split"] = split
    if demos is None:
        cfg.setdefault("sensors.camera.enabled", False)  # the policy does not look: skip rendering
    env = gymnasium.make("KaiDrive/Grasp-v0", config=cfg)
    policy = ScriptedGraspPolicy(env)
    successes, steps, failures = 0, [], []
    buf: dict[str, list] = {}
    t0 = time.perf_counter()
    total_steps = 0
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        policy.reset()
        done, n = False, 0
        while not done:
            a = policy.act(obs)
            if demos is not None:
                for k, v in obs.items():
                    buf.setdefault(f"obs_{k}", []).append(v)
                buf.setdefault("action", []).append(a)
                buf.setdefault("episode", []).append(ep)
            obs, r, term, trunc, info = env.step(a)
            n += 1
            done = term or trunc
            if demos is not None:
                buf.setdefault("reward", []).append(r)
                buf.setdefault("terminated", []).append(term)
                buf.setdefault("truncated", []).append(trunc)
        total_steps += n
        ok = bool(info["is_success"])
        successes += ok
        steps.append(n)
        if not ok:
            failures.append(seed + ep)
        if verbose:
            print(f"episode {ep} seed {seed + ep}: {'success' if ok else 'FAIL'} in {n} steps {info.get('object', '')}")
    wall = time.perf_counter() - t0
    env.close()
    lo, hi = wilson_interval(successes, episodes)
    if demos is not None:
        np.savez_compressed(demos, **{k: np.asarray(v) for k, v in buf.items()})
    return {
        "split": split,
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / max(episodes, 1),
        "wilson95": (lo, hi),
        "mean_steps": float(np.mean(steps)) if steps else 0.0,
        "failed_seeds": failures,
        "steps_per_s": total_steps / wall,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.experts.grasp", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--split", choices=("train", "validation", "test"), default="train")
    ap.add_argument("--seed", type=int, default=0, help="first episode seed (episodes use seed, seed+1, ...)")
    ap.add_argument("--assisted", action="store_true",
                    help="assisted mode (task.assisted: the env descends, closes and lifts; the policy steers "
                         "above the nearest object at the yaw needing the least turn)")
    ap.add_argument("--demos", default=None, help="save (obs, action, reward, ...) of every step to this .npz")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    config = {"task.assisted": True} if args.assisted else None
    r = run_episodes(args.episodes, args.split, args.seed, config=config, demos=args.demos, verbose=args.verbose)
    lo, hi = r["wilson95"]
    print(
        f"scripted grasp{' (assisted)' if args.assisted else ''}, split={r['split']}: success {r['successes']}/{r['episodes']} = {100 * r['success_rate']:.1f} % "
        f"(95 % Wilson interval {100 * lo:.1f}-{100 * hi:.1f} %), mean episode {r['mean_steps']:.1f} steps, "
        f"{r['steps_per_s']:.0f} steps/s"
    )
    if r["failed_seeds"]:
        print(f"failed seeds: {r['failed_seeds']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
