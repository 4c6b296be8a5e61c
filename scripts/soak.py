#!/usr/bin/env python
"""Soak test of the catalogue envs: many steps with random scenario factors and random actions.

Two modes, each env in its own fresh process (``--workers`` of them at a time), one table at the end:

    python scripts/soak.py                          # 1,000,000 steps split evenly over every env
    python scripts/soak.py --steps 50000 --envs lane-keep highway --workers 2
    python scripts/soak.py --resets 10000           # RSS over env.reset(seed=i), i < 10,000, per env

Steps mode: every episode starts with ``reset(seed=..., options={"scenario": <random factors>})``
(driving envs: light, colours, sensor noise, distractors, obstacles, pedestrians, NPC traffic, the
lead's behaviour and the ego's start, each present or not at random; envs without scenario factors
get a plain seeded reset) and runs to its end with uniformly random actions. Every observation array
(every key, at reset and after every step) and every reward is checked: a NaN or inf stops the soak
with a message naming env, episode, step, key and the scenario, and the exit status is 1. Prints,
per env: steps, episodes, steps/s, RSS at the start (after the first reset), at the end and the max.

Resets mode: ``env.reset(seed=i)`` for i in 0..N-1, RSS sampled every N/20 resets; prints RSS after
the first reset, after warm-up (N/10 resets) and at the end, and the growth after warm-up.

RSS is the process's resident set (``VmRSS`` in /proc/self/status; psutil elsewhere).
``--inject-nonfinite STEP`` puts a NaN into one observation array at soak step STEP of each env
(a self-check that the soak catches it).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import gymnasium
import numpy as np

DEFAULT_STEPS = 1_000_000


class NonFiniteError(RuntimeError):
    """An observation array or a reward was NaN or inf."""


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident set size of this process, MB (MiB)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - neither /proc nor psutil
        return float("nan")


# ---------------------------------------------------------------------------------------------
# random scenario factors
# ---------------------------------------------------------------------------------------------
def _rgba(rng: np.random.Generator) -> list[float]:
    return [float(x) for x in rng.uniform(0.05, 1.0, 3)] + [1.0]


def random_factors(env: gymnasium.Env, rng: np.random.Generator) -> dict[str, Any] | None:
    """A random subset of the scenario record for ``env`` (``None`` if its task has no factors).

    Every factor of :mod:`kai_drive.sim.scenario` appears with some probability, with values inside
    what the env can hold (lanes < n_lanes, arc lengths within the shortest route)."""
    base = env.unwrapped
    if getattr(base.task, "realise", None) is None:
        return None
    spec = base.spec_data
    n_lanes = int(spec.road.n_lanes)
    lengths = spec.road.length_m
    max_s = float(min(lengths) if isinstance(lengths, (tuple, list)) else lengths) - 20.0
    out: dict[str, Any] = {}
    if base.renderer == "tiny" and rng.random() < 0.7:  # other renderers ignore the light (and say so)
        out["light"] = {
            "direction": [float(x) for x in rng.uniform(-100, 100, 2)] + [float(rng.uniform(20, 100))],
            "color": [float(x) for x in rng.uniform(0.4, 1.0, 3)],
            "intensity": float(rng.uniform(0.2, 1.5)),
            "shadow": bool(rng.random() < 0.3),
        }
    if rng.random() < 0.6:
        out["colors"] = {k: _rgba(rng) for k in ("road", "ground", "marking", "barrier") if rng.random() < 0.7}
    if rng.random() < 0.6:
        out["sensor_noise"] = {
            "camera_noise_std": float(rng.uniform(0, 20)), "camera_dropout": float(rng.uniform(0, 0.2)),
            "lidar_noise_std": float(rng.uniform(0, 0.05)), "lidar_dropout": float(rng.uniform(0, 0.3)),
            "state_noise_std": float(rng.uniform(0, 0.05)),
        }
    if rng.random() < 0.5:
        out["distractors"] = [
            {"s_m": float(rng.uniform(5, max_s)), "side": int(rng.choice([-1, 1])),
             "distance_m": float(rng.uniform(0.5, 8)), "size_m": float(rng.uniform(0.3, 2.5)), "color": _rgba(rng)}
            for _ in range(int(rng.integers(1, 4)))
        ]
    if rng.random() < 0.4:
        out["obstacles"] = [
            {"s_m": float(rng.uniform(25, max_s)), "d_m": float(rng.uniform(-4, 4)),
             "size_m": [float(x) for x in rng.uniform(0.3, 1.5, 3)], "yaw_rad": float(rng.uniform(-math.pi, math.pi)),
             "color": _rgba(rng)}
            for _ in range(int(rng.integers(1, 3)))
        ]
    if rng.random() < 0.4:
        out["pedestrians"] = [
            {"s_m": float(rng.uniform(30, max_s)), "side": int(rng.choice([-1, 1])),
             "speed_mps": float(rng.uniform(0.8, 2.0)), "trigger_distance_m": float(rng.uniform(10, 40))}
            for _ in range(int(rng.integers(1, 3)))
        ]
    if rng.random() < 0.5:
        out["traffic"] = [
            {"lane": int(rng.integers(n_lanes)), "s_m": float(rng.uniform(25, max_s)),
             "speed_mps": float(rng.uniform(0, 15)), "desired_speed_mps": float(rng.uniform(5, 20)), "color": _rgba(rng)}
            for _ in range(int(rng.integers(1, 5)))
        ]
    r = rng.random()
    if r < 0.3:
        out["lead"] = None
    elif r < 0.6:
        out["lead"] = {
            "gap_m": float(rng.uniform(8, 40)), "speed_mps": float(rng.uniform(3, 15)),
            "speed_amplitude_mps": float(rng.uniform(0, 3)), "speed_period_s": float(rng.uniform(4, 15)),
            "brake_at_s": float(rng.uniform(1, 15)) if rng.random() < 0.7 else None,
            "brake_decel_mps2": float(rng.uniform(2, 9)), "brake_duration_s": float(rng.uniform(0.5, 3)),
        }
    if rng.random() < 0.5:
        out["start_offset_m"] = float(rng.uniform(-1.0, 1.0))
        out["start_heading_rad"] = float(rng.uniform(-0.2, 0.2))
        out["start_speed_mps"] = float(rng.uniform(0, 15))
    return out


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def check_finite(obs: dict[str, np.ndarray], reward: float | None, where: str) -> None:
    """Raise :class:`NonFiniteError` if any observation array or the reward is NaN or inf."""
    for key, arr in obs.items():
        a = np.asarray(arr)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a.ravel()))
            raise NonFiniteError(
                f"{where}: observation[{key!r}] has {bad.size} non-finite value(s), first at flat index "
                f"{int(bad[0])}: {a.ravel()[bad[0]]!r}"
            )
        if a.dtype.kind not in "fcuib":
            raise NonFiniteError(f"{where}: observation[{key!r}] has dtype {a.dtype}, not a numeric array")
    if reward is not None and not math.isfinite(float(reward)):
        raise NonFiniteError(f"{where}: reward is {reward!r}")


class InjectNonFinite(gymnasium.Wrapper):
    """Put a NaN into the first float observation array at the ``at_step``-th call of ``step`` (1-based):
    the soak's self-check. A real wrapper around the real env."""

    def __init__(self, env: gymnasium.Env, at_step: int) -> None:
        super().__init__(env)
        self.at_step = int(at_step)
        self.n_steps = 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.n_steps += 1
        if self.n_steps == self.at_step:
            obs = dict(obs)
            key = next((k for k, v in obs.items() if np.asarray(v).dtype.kind == "f"), None)
            if key is None:
                reward = float("nan")
            else:
                arr = np.array(obs[key], copy=True)
                arr.reshape(-1)[0] = np.nan
                obs[key] = arr
        return obs, reward, terminated, truncated, info


# ---------------------------------------------------------------------------------------------
# one env
# ---------------------------------------------------------------------------------------------
@dataclass
class SoakResult:
    env: str
    steps: int
    episodes: int
    seconds: float
    rss_start_mb: float
    rss_end_mb: float
    rss_max_mb: float
    error: str | None = None

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class ResetsResult:
    env: str
    resets: int
    seconds: float
    rss_first_mb: float
    rss_warm_mb: float
    rss_end_mb: float
    rss_max_mb: float
    samples: list[tuple[int, float]] = field(default_factory=list)

    @property
    def growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_warm_mb


def soak_env(
    env_id: str,
    steps: int,
    seed: int = 0,
    wrap: Callable[[gymnasium.Env], gymnasium.Env] | None = None,
    progress_every: int = 0,
    log: Callable[[str], None] = print,
) -> SoakResult:
    """Run ``env_id`` for ``steps`` steps (episodes to their end, random factors and actions).

    ``wrap`` wraps the env (e.g. :class:`InjectNonFinite`). Raises :class:`NonFiniteError` on a NaN or
    inf; ``progress_every`` > 0 logs a line every that many steps."""
    import kai_drive  # noqa: F401  (registers the envs)
    from kai_drive.catalog import resolve_env

    full_id, _ = resolve_env(env_id)
    env = gymnasium.make(full_id)
    if wrap is not None:
        env = wrap(env)
    rng = np.random.default_rng([seed, 0x50A6])
    env.action_space.seed(int(rng.integers(2**31)))
    done_steps = episodes = 0
    rss_start = rss_max = float("nan")
    t0 = time.perf_counter()
    try:
        while done_steps < steps:
            ep_seed = int(rng.integers(2**31 - 1))
            factors = random_factors(env, rng)
            options = {"scenario": factors} if factors else None
            obs, _ = env.reset(seed=ep_seed, options=options)
            episodes += 1
            where = f"{full_id} episode {episodes} (reset(seed={ep_seed}, options={options!r}))"
            check_finite(obs, None, f"{where} at reset")
            if episodes == 1:
                rss_start = rss_max = rss_mb()
                t0 = time.perf_counter()
            t = 0
            while done_steps < steps:
                obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
                t += 1
                done_steps += 1
                check_finite(obs, reward, f"{where} step {t}")
                if progress_every and done_steps % progress_every == 0:
                    rss = rss_mb()
                    rss_max = max(rss_max, rss)
                    dt = time.perf_counter() - t0
                    log(f"  {full_id}: {done_steps}/{steps} steps, {episodes} episodes, "
                        f"{done_steps / dt:.0f} steps/s, RSS {rss:.1f} MB")
                if terminated or truncated:
                    break
            if episodes % 20 == 0:
                rss_max = max(rss_max, rss_mb())
        rss_end = rss_mb()  # before close(): the env's own memory counts
    finally:
        env.close()
    return SoakResult(full_id, done_steps, episodes, time.perf_counter() - t0, rss_start, rss_end, max(rss_max, rss_end))


def resets_env(env_id: str, resets: int, log: Callable[[str], None] = print, log_samples: bool = False) -> ResetsResult:
    """``env.reset(seed=i)`` for i < ``resets``; RSS after the first, after ``resets // 10`` (warm-up)
    and at the end, sampled every ``resets // 20``."""
    import kai_drive  # noqa: F401
    from kai_drive.catalog import resolve_env

    full_id, _ = resolve_env(env_id)
    env = gymnasium.make(full_id)
    every = max(1, resets // 20)
    warm_at = max(1, resets // 10)
    samples: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    try:
        for i in range(resets):
            env.reset(seed=i)
            n = i + 1
            if n == 1 or n % every == 0 or n == resets:
                samples.append((n, rss_mb()))
                if log_samples:
                    log(f"  {full_id}: {n}/{resets} resets, RSS {samples[-1][1]:.1f} MB, {time.perf_counter() - t0:.0f} s")
    finally:
        env.close()
    seconds = time.perf_counter() - t0
    first = samples[0][1]
    warm = next(r for n, r in samples if n >= warm_at)
    return ResetsResult(full_id, resets, seconds, first, warm, samples[-1][1], max(r for _, r in samples), samples)


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------
def _child(job: tuple) -> dict:
    mode, env_id, n, seed, inject, progress_every = job
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        if mode == "resets":
            res = resets_env(env_id, n, log=log, log_samples=progress_every > 0)
            out = asdict(res)
        else:
            wrap = (lambda e: InjectNonFinite(e, inject)) if inject else None
            out = asdict(soak_env(env_id, n, seed=seed, wrap=wrap, progress_every=progress_every, log=log))
    except NonFiniteError as err:
        return {"env": env_id, "error": str(err)}
    log(f"done {env_id}: {_row(mode, out)}")
    return out


def _row(mode: str, r: dict) -> str:
    if mode == "resets":
        return (f"{r['env']:<24} {r['resets']:>7d} {r['seconds']:>7.0f} {r['rss_first_mb']:>8.1f} "
                f"{r['rss_warm_mb']:>8.1f} {r['rss_end_mb']:>8.1f} {r['rss_end_mb'] - r['rss_warm_mb']:>+8.1f}")
    sps = r["steps"] / r["seconds"] if r["seconds"] > 0 else float("nan")
    return (f"{r['env']:<24} {r['steps']:>8d} {r['episodes']:>8d} {sps:>8.0f} {r['rss_start_mb']:>9.1f} "
            f"{r['rss_end_mb']:>8.1f} {r['rss_max_mb']:>8.1f}")


def _header(mode: str) -> str:
    if mode == "resets":
        return f"{'env':<24} {'resets':>7} {'s':>7} {'RSS 1st':>8} {'RSS warm':>8} {'RSS end':>8} {'growth':>8}   (MB; warm = after 10 %)"
    return f"{'env':<24} {'steps':>8} {'episodes':>8} {'steps/s':>8} {'RSS start':>9} {'RSS end':>8} {'RSS max':>8}   (MB)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="total steps, split evenly over the envs")
    ap.add_argument("--resets", type=int, default=0, help="resets mode: this many resets per env (no steps)")
    ap.add_argument("--envs", nargs="+", default=None, help="aliases or ids (default: every catalogue env)")
    ap.add_argument("--workers", type=int, default=1, help="envs run in this many processes at once")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress-every", type=int, default=0, help="log a line every this many steps (resets mode: samples)")
    ap.add_argument("--inject-nonfinite", type=int, default=0, metavar="STEP",
                    help="self-check: put a NaN into an observation at this step of each env")
    args = ap.parse_args(argv)

    import kai_drive
    from kai_drive.catalog import env_ids, resolve_env

    envs = [resolve_env(e)[0] for e in args.envs] if args.envs else list(env_ids())
    mode = "resets" if args.resets > 0 else "steps"
    if mode == "steps":
        if args.steps < len(envs):
            ap.error(f"--steps {args.steps} is fewer than one per env ({len(envs)} envs)")
        per = [args.steps // len(envs) + (1 if i < args.steps % len(envs) else 0) for i in range(len(envs))]
        jobs = [("steps", e, n, args.seed + i, args.inject_nonfinite, args.progress_every) for i, (e, n) in enumerate(zip(envs, per))]
        print(f"soak: {args.steps} steps over {len(envs)} envs, {args.workers} worker(s), seed {args.seed}, "
              f"kai_drive from {kai_drive.__file__}", flush=True)
    else:
        jobs = [("resets", e, args.resets, 0, 0, args.progress_every) for e in envs]
        print(f"soak --resets: {args.resets} resets per env, {args.workers} worker(s), kai_drive from {kai_drive.__file__}", flush=True)

    ctx = multiprocessing.get_context("spawn")  # a fresh process per env: its RSS is its own
    with ctx.Pool(processes=max(1, args.workers), maxtasksperchild=1) as pool:
        results = pool.map(_child, jobs, chunksize=1)

    print(_header(mode))
    failed = [r for r in results if r.get("error")]
    for r in results:
        print(f"{r['env']:<24} FAILED" if r.get("error") else _row(mode, r))
    if mode == "steps" and not failed:
        total = sum(r["steps"] for r in results)
        print(f"{'total':<24} {total:>8d} {sum(r['episodes'] for r in results):>8d}  every observation and reward finite")
    for r in failed:
        print(f"NON-FINITE: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
