"""Stress-test a driving policy: search the env's scenario space for failures (docs/stress.md).

examples:
  python -m kai_drive.stress --env follow --policy scripted --budget 500 --out stress/follow
  python -m kai_drive.stress --env follow --policy scripted --set scenario.lead.brake_decel_mps2=[3,9] --estimate
  python -m kai_drive.stress --env crossing --run runs/crossing/ppo_1 --budget 200 --ray
  python -m kai_drive.stress --env follow --pretrained --budget 100                 # the shipped follow driver
  python -m kai_drive.stress --env follow --policy scripted --method random --budget 500   # the reference
  python -m kai_drive.stress --replay stress/follow/failures/0042_collision-vehicle.json --policy scripted

Writes OUT/failures/*.json (each failure's scenario record: reset(options={"scenario": record}) replays it),
OUT/result.json (schema kai-drive-stress/1), OUT/failure_map.png, OUT/mode<k>.gif and OUT/report.md.
Exit status: 0 done (failures or not), 1 a --replay gave another outcome, 2 bad input.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import yaml

from kai_drive.catalog import UnknownEnvError, resolve_env
from kai_drive.distributed import RayMissingError

EXIT_OK, EXIT_REPLAY_DIFFERS, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.stress", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default=None, help="follow, lane-keep, highway, crossing (alias or id; default: the run's)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder runs/<alias>/<algo>_<n>/")
    src.add_argument("--pretrained", nargs="?", const="", metavar="NAME",
                     help="a shipped agent (kai_drive.pretrained; default NAME: the --env's alias), in its env config")
    src.add_argument("--policy", choices=["scripted", "stop", "constant"], help="a built-in driver (as evaluate)")
    ap.add_argument("--checkpoint", choices=["final", "best"], default="final", help="with --run")
    ap.add_argument("--budget", type=int, default=100, help="episodes in all (search, and estimate with --estimate)")
    ap.add_argument("--batch", type=int, default=10, help="episodes per cross-entropy round")
    ap.add_argument("--method", choices=["cem", "random"], default="cem", help="cem search, or nominal random sampling")
    ap.add_argument("--seed", type=int, default=0, help="seed of the search (road seeds and factor draws)")
    ap.add_argument("--estimate", action="store_true",
                    help="spend --estimate-frac of the budget on an importance-sampling failure-probability estimate")
    ap.add_argument("--estimate-frac", type=float, default=0.5)
    ap.add_argument("--factors", default=None, help="comma-separated substrings: search only matching factors (lead.,ped)")
    ap.add_argument("--max-seconds", type=float, default=None, help="cut episodes at this simulated time (s)")
    ap.add_argument("--plausibility", type=float, default=0.01, help="weight of the log-likelihood in the search score")
    ap.add_argument("--severity", choices=["graded", "max"], default=None,
                    help="near-miss score of an episode without failure (docs/stress.md; default graded)")
    ap.add_argument("--refit", choices=["pooled", "round"], default=None,
                    help="cem: refit on the elite of every episode so far (pooled, default) or of the last round")
    ap.add_argument("--weights", choices=["none", "likelihood"], default=None,
                    help="cem: plain elite fit (none, default) or weighted by p/q toward the nominal (likelihood)")
    ap.add_argument("--elite-frac", type=float, default=None, help="cem: elite fraction (default 0.2)")
    ap.add_argument("--alpha", type=float, default=None, help="cem: smoothing of each refit (default 0.9)")
    ap.add_argument("--modes", type=int, default=3, help="analyse (replay, smallest change, but-for, GIF) this many modes")
    ap.add_argument("--bisect", type=int, default=3, help="halvings per factor in the smallest-change search")
    ap.add_argument("--no-gifs", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="env config override (YAML value)")
    ap.add_argument("--out", default=None, help="output folder (default: stress/<alias>/<policy>)")
    ap.add_argument("--replay", default=None, metavar="FILE", help="replay a failure file instead of searching")
    ap.add_argument("--ray", action="store_true", help='episodes as Ray tasks (pip install "kai-drive[ray]")')
    ap.add_argument("--address", default=None, help="with --ray: Ray cluster to join")
    ap.add_argument("--num-cpus", type=int, default=None, help="with --ray: CPUs of the local Ray instance")
    return ap


def _inputs(args: argparse.Namespace) -> tuple:
    """``(policy, env id or None, alias, env config overrides, SearchConfig)``; ValueError for bad flags."""
    from kai_drive.evaluation import load_run
    from kai_drive.evaluation.jobs import PolicySpec
    from kai_drive.evaluation.stress import SearchConfig

    if (args.address or args.num_cpus) and not args.ray:
        raise ValueError("--address / --num-cpus go with --ray")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise ValueError(f"--max-seconds {args.max_seconds}: give a positive time in seconds")
    env_cfg = {}
    for kv in args.set:
        k, eq, v = kv.partition("=")
        if not eq:
            raise ValueError(f"--set {kv!r}: write KEY=VALUE, e.g. scenario.lead.brake_decel_mps2=[3,9]")
        env_cfg[k] = yaml.safe_load(v)
    env = args.env
    if args.run:
        policy, run_env = load_run(args.run, args.checkpoint)
        policy.spec = PolicySpec("run", path=args.run, checkpoint=args.checkpoint)
        env = env or run_env
    elif args.pretrained is not None:
        from kai_drive.pretrained.policy import for_env

        policy, env = for_env(args.pretrained, env)
        policy.spec = PolicySpec("pretrained", name=policy.source)  # what --ray workers load
    else:
        policy = args.policy
    if env is None and not args.replay:
        raise ValueError("--env is required with --policy")
    env_id, alias = resolve_env(env) if env else (None, None)
    cfg = SearchConfig(budget=args.budget, batch=args.batch, method=args.method, seed=args.seed, estimate=args.estimate,
                       estimate_frac=args.estimate_frac, plausibility_weight=args.plausibility)
    for flag, field, value in (("severity", "severity", args.severity), ("refit", "memory", args.refit and args.refit == "pooled"),
                               ("weights", "weighted", args.weights and args.weights == "likelihood"),
                               ("elite_frac", "elite_frac", args.elite_frac), ("alpha", "alpha", args.alpha)):
        if getattr(args, flag) is not None:
            setattr(cfg, field, value)
    cfg.check()
    return policy, env_id, alias, env_cfg, cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kai_drive.evaluation.stress import replay_failure, stress_test, write_stress_outputs  # torch: after parsing

    try:
        policy, env_id, alias, env_cfg, cfg = _inputs(args)
        if args.replay:
            if not Path(args.replay).is_file():
                raise FileNotFoundError(f"--replay {args.replay}: no such file (a failures/*.json of a stress run)")
            r = replay_failure(args.replay, policy, env_cfg)
            print(f"replay: {r['outcome']} after {r['steps']} steps; recorded {r['expected']} after "
                  f"{r['expected_steps']} steps: {'identical' if r['same'] else 'DIFFERENT'}")
            return EXIT_OK if r["same"] else EXIT_REPLAY_DIFFERS
        t0 = time.perf_counter()
        res = stress_test(policy, env_id, cfg, env_config=env_cfg,
                          factors=[f for f in args.factors.split(",") if f] if args.factors else None,
                          ray=args.ray, address=args.address, num_cpus=args.num_cpus, max_modes=args.modes,
                          bisect=args.bisect, max_seconds=args.max_seconds, log=lambda m: print(m, flush=True))
    except (FileNotFoundError, ValueError, UnknownEnvError, RayMissingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    name = res["policy"].replace(":", "_").replace("/", "_")
    out = Path(args.out or f"stress/{alias}/{name}")
    cmd = "python -m kai_drive.stress " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    paths = write_stress_outputs(res, out, command=cmd, gifs=not args.no_gifs)
    est = res.get("estimate")
    print(f"{res['policy']} on {res['env_id']}: {res['failures']} failures ({res['distinct_failures']} distinct, "
          f"{len(res['modes'])} modes) in {res['episodes']} episodes; {time.perf_counter() - t0:.0f} s -> {paths['report']}")
    if est:
        print(f"  P(failure) under the nominal distribution: {est['p']:.4g} [{est['ci95'][0]:.4g}, {est['ci95'][1]:.4g}] "
              f"({est['method']}, {est['n']} episodes)")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
