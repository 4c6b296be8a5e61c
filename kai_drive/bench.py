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

from kai_drive.speed import bench_env, sensor_sets

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
