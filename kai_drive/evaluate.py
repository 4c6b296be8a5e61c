"""Evaluate a policy: safety, robustness and causal analysis, with statistics (docs/evaluation.md).

examples:
  python -m kai_drive.evaluate --env follow --policy scripted                  # the IDM + pure-pursuit baseline
  python -m kai_drive.evaluate --env lane-keep --policy stop --sections safety  # full brake: must fail the thresholds
  python -m kai_drive.evaluate --env follow --run runs/follow/ppo_1 --suite quick --out eval/follow
  python -m kai_drive.evaluate --env lane-keep --model my_model.zip --vecnormalize vecnormalize.pkl
  python -m kai_drive.evaluate --env lane-keep --pretrained --suite quick      # the shipped agent (docs/models.md)
  python -m kai_drive.evaluate --env follow --run runs/follow/ppo_1 --seeds 20 --tensorboard
  python -m kai_drive.evaluate --env follow --policy scripted --ray                 # episodes on a local Ray instance
  python -m kai_drive.evaluate --env follow --run runs/follow/ppo_1 --ray --address auto   # ... or on a cluster

Writes OUT/result.json (schema kai-drive-eval/1), OUT/report.md with figures and GIFs of the worst episodes.
--ray spreads the episodes over Ray workers (pip install "kai-drive[ray]") and gives the same numbers as a
serial run. The report shows the policy beside the trivial baselines stop and constant on the same seeds.
Exit status: 0 every threshold of the suite that applies passes, 1 one fails, 2 bad input (e.g. an unknown
suite key), 3 no threshold applies to the env (nothing was checked).
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
from kai_drive.metrics import family_of

EXIT_PASSED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NOTHING_CHECKED = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.evaluate", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default=None, help="env alias or id (default: the run's env)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="training run folder runs/<alias>/<algo>_<n>/")
    src.add_argument("--model", help="an SB3 model .zip")
    src.add_argument("--pretrained", nargs="?", const="", metavar="NAME", help="a shipped agent (default: the --env's)")
    src.add_argument("--policy", choices=["scripted", "stop", "constant"],
                     help="a built-in baseline: scripted (privileged expert), stop (full brake; grasp: zero action), "
                          "constant (straight ahead, steady throttle)")
    ap.add_argument("--checkpoint", choices=["final", "best"], default="final", help="with --run")
    ap.add_argument("--algo", default=None, help="with --model: ppo, sac, td3 (default: from the file name)")
    ap.add_argument("--vecnormalize", default=None, help="with --model: VecNormalize statistics (.pkl)")
    ap.add_argument("--suite", default="quick", help="suite name in configs/eval/ (quick, full) or a YAML path")
    ap.add_argument("--seeds", type=int, default=None, help="held-out seeds per section (overrides the suite)")
    ap.add_argument("--episodes", type=int, default=None, help="safety episodes (overrides the suite)")
    ap.add_argument("--sections", default="safety,robustness,causal,attribution", help="comma-separated subset")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="env config override (YAML value)")
    ap.add_argument("--out", default=None, help="output folder (default: eval/<alias>/<policy>)")
    ap.add_argument("--videos", type=int, default=None, help="GIFs of the N worst episodes (default: the suite's)")
    ap.add_argument("--video-size", default=None, metavar="WxH", help="GIF frame size (default: the suite's, 128x96)")
    ap.add_argument("--video-frames", type=int, default=None, metavar="N",
                    help="frames per GIF: the last N of the episode (default 40)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the stop / constant baselines the report shows beside the policy (same safety seeds)")
    ap.add_argument("--tensorboard", action="store_true", help="also log scalars to OUT/tb")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--ray", action="store_true", help='run the episodes as Ray tasks (needs pip install "kai-drive[ray]")')
    ap.add_argument("--address", default=None, help="with --ray: Ray cluster to join (default: $RAY_ADDRESS, else a local instance)")
    ap.add_argument("--num-cpus", type=int, default=None, help="with --ray: CPUs of the local Ray instance (default: all cores)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kai_drive.evaluation import evaluate, write_outputs  # torch + SB3: after parsing (fast --help)
    from kai_drive.evaluation.rollout import make_env

    try:
        policy, env_id, alias, env_cfg, video_size = _inputs(args)
    except (FileNotFoundError, ValueError, UnknownEnvError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    name = policy if isinstance(policy, str) else policy.name.replace(":", "_").replace("/", "_")
    out = Path(args.out or f"eval/{alias}/{name}")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    t0 = time.perf_counter()
    try:
        res = evaluate(policy, env_id, args.suite, seeds=args.seeds, episodes=args.episodes, env_config=env_cfg,
                       progress=progress, sections=tuple(args.sections.split(",")), log=lambda m: print(m, flush=True),
                       ray=args.ray, address=args.address, num_cpus=args.num_cpus,
                       baselines=False if args.no_baselines else None)
    except (FileNotFoundError, ValueError, RayMissingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    cmd = "python -m kai_drive.evaluate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    paths = write_outputs(res, out, make_env=lambda: make_env(env_id, res["env_config"]), policy=res["_policy"], command=cmd,
                          videos=args.videos, tensorboard=args.tensorboard, video_size=video_size,
                          video_frames=args.video_frames)
    s, key = res["safety"]["summary"], family_of(env_id).score_key
    val = s[key].get("mean", s[key].get("rate"))
    state = {True: "PASSED", False: "FAILED", None: "none apply (nothing checked)"}[res["passed"]]
    print(f"{res['policy']} on {env_id}: {key} {val:.3f}; thresholds {state}; "
          f"{time.perf_counter() - t0:.0f} s -> {paths['report']}")
    _print_outcome(res, key)
    return EXIT_PASSED if res["passed"] else (EXIT_FAILED if res["passed"] is False else EXIT_NOTHING_CHECKED)


def _print_outcome(res: dict, key: str) -> None:
    for t in res["thresholds"]:
        if t["passed"] is False:
            print(f"  FAIL {t['path']} {t['condition']} (actual {t['actual']})")
    for b, row in (res.get("baselines") or {}).items():
        bs = {True: "PASSES (the thresholds reward it!)", False: "fails", None: "n/a"}[row["passed"]]
        print(f"  baseline {b}: {key} {row['summary'][key].get('mean', row['summary'][key].get('rate')):.3f}; thresholds: {bs}")


def _inputs(args: argparse.Namespace) -> tuple:
    """``(policy, env id, alias, env config overrides, video size)`` of the flags; ValueError for bad ones."""
    from kai_drive.evaluation import load_model, load_run
    from kai_drive.evaluation.jobs import PolicySpec
    from kai_drive.pretrained.policy import for_env

    if (args.address or args.num_cpus) and not args.ray:
        raise ValueError("--address / --num-cpus go with --ray")
    w, _, h = (args.video_size or "").lower().partition("x")
    if args.video_size and not (w.isdigit() and h.isdigit()):
        raise ValueError(f"--video-size {args.video_size!r}: write WxH, e.g. 96x72")
    video_size = (int(w), int(h)) if args.video_size else None
    bad = [kv for kv in args.set if "=" not in kv]
    if bad:
        raise ValueError(f"--set {bad[0]!r}: write KEY=VALUE, e.g. sensors.camera.noise_std=5")
    env_cfg = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in args.set)}
    if args.run:
        policy, run_env = load_run(args.run, args.checkpoint)
        policy.spec = PolicySpec("run", path=args.run, checkpoint=args.checkpoint)  # what --ray workers load
        env = args.env or run_env
    elif args.model:
        policy, env = load_model(args.model, args.algo, args.vecnormalize), args.env
        policy.spec = PolicySpec("model", path=args.model, algo=args.algo, vecnormalize=args.vecnormalize)
    elif args.pretrained is not None:
        policy, env = for_env(args.pretrained, args.env)
        policy.spec = PolicySpec("pretrained", name=policy.source)  # what --ray workers load
    else:
        policy, env = args.policy, args.env
    if env is None:  # --model / --policy
        raise ValueError("--env is required with --model / --policy")
    env_id, alias = resolve_env(env)
    return policy, env_id, alias, env_cfg, video_size


if __name__ == "__main__":
    sys.exit(main())
