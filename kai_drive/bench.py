"""Environment speed benchmark: ``python -m kai_drive.bench --env lane-keep``.

For each sensor set it measures env steps/s with random actions (single process) and the *sensor
floor*: the bare PyBullet calls of one control step in the same world (one ``stepSimulation`` of
``substeps`` physics steps, the same camera image and the same lidar sweep), timed from the same
states as the env's own steps (see :func:`bench_env`), and prints the ratio.
Resets are timed separately (they rebuild the road). Peak RSS of this process (torch not imported)
is reported too. Results are printed as a table and, with ``--json``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from typing import Any


#: sensor sets of envs with a lidar (driving)
DRIVING_SETS: dict[str, dict[str, Any]] = {
    "default (camera+lidar+state)": {},
    "state only": {"sensors": {"camera": {"enabled": False}, "lidar": {"enabled": False}}},
    "lidar+state": {"sensors": {"camera": {"enabled": False}}},
    "camera+state": {"sensors": {"lidar": {"enabled": False}}},
    "camera rgb+depth+seg": {"sensors": {"camera": {"depth": True, "segmentation": True}}},
}
#: sensor sets of envs without a lidar (grasping: a fixed RGB-D camera)
CAMERA_SETS: dict[str, dict[str, Any]] = {
    "default (as in the YAML)": {},
    "rgb+state": {"sensors": {"camera": {"depth": False, "segmentation": False}}},
    "rgb-d+state": {"sensors": {"camera": {"depth": True, "segmentation": False}}},
    "rgb+depth+seg": {"sensors": {"camera": {"depth": True, "segmentation": True}}},
    "state only": {"sensors": {"camera": {"enabled": False}}},
}


def sensor_sets(env_name: str) -> dict[str, dict[str, Any]]:
    """The sensor sets worth timing for ``env_name`` (driving sets when its YAML enables a lidar)."""
    import kai_drive.tasks  # noqa: F401 - registers every task kind's spec
    from kai_drive.catalog import env_yaml
    from kai_drive.specs import load_env_spec

    spec = load_env_spec(env_yaml(env_name))
    return DRIVING_SETS if spec.sensors.lidar.enabled else CAMERA_SETS


def _floor_call(env):
    """A function doing the bare PyBullet calls of one control step in ``env``'s world, as now:
    one ``stepSimulation`` (``substeps`` physics steps), the same camera image(s), the same sweep(s)."""
    from kai_drive.sensors import Camera, Lidar
    from kai_drive.sim.world import RAY_MASK_WITHOUT_EGO

    u = env.unwrapped
    world, client = u.world, u.world.client
    mount = u.task.sensor_mount(world)
    cams = [
        (c.width, c.height, c.view_matrix(mount), c._proj, c._flags, dict(getattr(c, "light", {})))
        for c in u.sensors
        if isinstance(c, Camera)
    ]
    rays = [l.rays(mount) for l in u.sensors if isinstance(l, Lidar)]
    flag = world.render_flag

    def call() -> None:
        client.stepSimulation()
        for w, h, view, proj, flags, light in cams:
            client.getCameraImage(w, h, view, proj, renderer=flag, flags=flags, **light)
        for frm, to in rays:
            client.rayTestBatch(frm, to, collisionFilterMask=RAY_MASK_WITHOUT_EGO)

    return call


def bench_env(env_name: str, config: dict, seconds: float, seed: int = 0) -> dict[str, float]:
    """Time ``env_name`` with ``config`` overrides under random actions.

    * steps/s: ``env.step`` alone (resets timed apart), and with resets included;
    * the floor, paired: before a step the physics state is saved, the bare PyBullet calls of one
      control step are timed from it, the state is restored, then ``env.step`` is timed from the very
      same state; so both see the same scene (a car scraping a barrier costs more physics than one
      cruising) and the ratio measures only what the env adds (Python, reward, info, observation).
    """
    import gymnasium

    import kai_drive  # noqa: F401 - registers the envs
    from kai_drive.catalog import resolve_env

    env_id, _ = resolve_env(env_name)
    env = gymnasium.make(env_id, config=config, disable_env_checker=True)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(256)]
    for i in range(10):  # warm-up
        *_, term, trunc, _ = env.step(actions[i])
        if term or trunc:
            env.reset()
    steps, resets, t_step, t_reset = 0, 0, 0.0, 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        a = actions[steps % 256]
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(a)
        t_step += time.perf_counter() - t0
        steps += 1
        if term or trunc:
            t0 = time.perf_counter()
            env.reset()
            t_reset += time.perf_counter() - t0
            resets += 1

    world = env.unwrapped.world
    env.reset(seed=seed + 1)
    n_pair, t_floor, t_env = 0, 0.0, 0.0
    t_end = time.perf_counter() + seconds / 2
    while time.perf_counter() < t_end:
        floor = _floor_call(env)
        sid = world.save_state()
        world.restore_state(sid)  # both timings start from a just-restored state (cold contact caches)
        t0 = time.perf_counter()
        floor()
        t_floor += time.perf_counter() - t0
        world.restore_state(sid)
        world.remove_state(sid)
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(actions[n_pair % 256])
        t_env += time.perf_counter() - t0
        n_pair += 1
        if term or trunc:
            env.reset()
    env.close()
    sps = steps / t_step
    return {
        "steps_per_s": sps,
        "steps_per_s_with_resets": steps / (t_step + t_reset),
        "reset_ms": 1e3 * t_reset / max(resets, 1),
        "floor_per_s": n_pair / t_floor,
        "paired_steps_per_s": n_pair / t_env,
        "fraction_of_floor": t_floor / t_env,
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m kai_drive.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--env", default="lane-keep", help="env alias or id (default: lane-keep)")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per sensor set (default: 5)")
    ap.add_argument("--sets", nargs="*", default=None, help="sensor sets to run (default: all)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    sets = {k: v for k, v in sensor_sets(args.env).items() if args.sets is None or k in args.sets or k.split(" ")[0] in args.sets}
    results: dict[str, Any] = {
        "env": args.env,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "sets": {},
    }
    print(f"kai_drive.bench --env {args.env}  ({args.seconds:.0f} s per set, single process)")
    print(f"{'':32s} {'env':>20s} {'paired with the floor':>30s}")
    print(f"{'sensor set':32s} {'steps/s':>9s} {'w/ resets':>10s} {'env/s':>9s} {'floor/s':>9s} {'env/floor':>10s} {'reset ms':>9s}")
    for name, cfg in sets.items():
        r = bench_env(args.env, cfg, args.seconds)
        results["sets"][name] = r
        print(
            f"{name:32s} {r['steps_per_s']:9.0f} {r['steps_per_s_with_resets']:10.0f} {r['paired_steps_per_s']:9.0f} "
            f"{r['floor_per_s']:9.0f} {100 * r['fraction_of_floor']:9.0f}% {r['reset_ms']:9.1f}"
        )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    results["peak_rss_mb"] = rss_mb
    results["torch_imported"] = "torch" in sys.modules
    print(f"peak RSS of this process: {rss_mb:.0f} MB (torch imported: {results['torch_imported']})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
