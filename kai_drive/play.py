"""Watch a trained agent drive: ``python -m kai_drive.play --run runs/lane-keep/ppo_1``.

With a display the PyBullet GUI opens (``render_mode="human"``); without one (or with ``--record``)
the chase camera of every episode is written to a video: mp4 when ``imageio-ffmpeg`` is installed,
else an animated GIF. Each episode's return, success and route completion are printed. The work is done by
:mod:`kai_drive.training.playback`; this module parses the flags.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """\
examples:
  python -m kai_drive.play --run runs/lane-keep/ppo_1                 # best model, 3 episodes
  python -m kai_drive.play --run runs/lane-keep/ppo_1 --which final --episodes 5 --record
  python -m kai_drive.play --model runs/lane-keep/ppo_1/checkpoints/model_30000_steps.zip
  python -m kai_drive.play --model my_agent.zip --env lane-keep --set sensors.camera.enabled=false
  python -m kai_drive.play --env lane-keep --pretrained --record     # the shipped agent (docs/models.md)

Roads are the held-out test roads of kai_drive.train (2^30 + 2^29 + i) unless --road-seed is given, and
the env is the run's test config (env_config + test_env_config: grasp runs get the TEST objects) unless
--role says otherwise. Model .zip and VecNormalize .pkl files are pickles: play only runs you trust.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kai_drive.play",
        description="Drive a trained agent: GUI when a display exists, else a video of the chase camera.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a run folder made by kai_drive.train")
    src.add_argument("--model", type=Path, help="a model .zip (config and VecNormalize stats found beside it)")
    src.add_argument("--pretrained", nargs="?", const="", metavar="NAME",
                     help="a shipped agent (kai_drive.pretrained; default NAME: the --env's alias), in its env config")
    p.add_argument(
        "--which",
        choices=("best", "final", "latest"),
        default="best",
        help="with --run: best_model, final_model or the newest checkpoint (default: best)",
    )
    p.add_argument("--env", help="env alias or id (default: the run's)")
    p.add_argument(
        "--role",
        choices=("test", "eval", "train"),
        default="test",
        help="which of the run's env configs: test (default; env_config + test_env_config, e.g. the grasp test "
        "objects), eval (the periodic evaluations': validation objects) or train",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="env config override on top of the run's (dotted key, YAML value; repeatable), e.g. world.renderer=tiny",
    )
    p.add_argument("--vecnormalize", type=Path, help="VecNormalize stats (default: found beside the model)")
    p.add_argument("--episodes", type=int, default=3, help="episodes to drive (default: 3)")
    p.add_argument("--road-seed", type=int, help="first road seed (default: the held-out test roads)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic policy")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--gui", action="store_true", help="force the PyBullet GUI")
    mode.add_argument("--record", action="store_true", help="force recording a video (no GUI)")
    p.add_argument("--out", type=Path, help="video file (.mp4 or .gif; default: <run>/videos/...)")
    p.add_argument("--fps", type=int, default=None, help="video frame rate (default: the control rate)")
    p.add_argument("--size", default="320x240", help="video size WxH (default: 320x240)")
    return p


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return play(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def play(args: argparse.Namespace) -> int:
    from kai_drive.training import playback  # torch + SB3: imported after parsing, so --help stays fast

    if args.episodes < 1:
        raise ValueError("--episodes must be >= 1")
    gui = args.gui or (not args.record and has_display())
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {args.size}: expected WxH, e.g. 320x240") from None
    if args.pretrained is not None:
        files, env_id, venv, model, algo = _pretrained(args, gui)
    else:
        files = playback.find_run_files(args.run, args.which, args.model, args.vecnormalize, args.role)
        env_id, env_config, algo = playback.resolve_play_env(files, args.env, args.set)
        venv = playback.make_play_env(files, env_id, env_config, gui)
        model = playback.load_agent(files, algo, venv)
    fps = args.fps or playback.control_rate(venv)
    writer = out = None
    if not gui:
        out = playback.video_path(args.out, files)
        writer = playback.open_writer(out, fps)
    seeds = playback.road_seeds(args.road_seed, args.episodes)
    role = (files.config or {}).get("env_config_role")
    print(
        f"{files.model} ({algo}) on {env_id}" + (f" ({role} config)" if role else "")
        + f", {'GUI' if gui else f'recording {out}'}, road seeds {seeds[0]}..{seeds[-1]}"
    )
    try:
        results = playback.drive(venv, model, seeds, not args.stochastic, gui, writer, out, (w, h))
    finally:
        if writer is not None:
            writer.close()
        venv.close()
    if results:
        sr = sum(float(r.get("success", 0.0)) for r in results) / len(results)
        print(f"success {100 * sr:.0f} % over {len(results)} episode(s)" + (f"; video: {out}" if out else ""))
    return 0


def _pretrained(args: argparse.Namespace, gui: bool) -> tuple:
    """``--pretrained [NAME]``: the shipped agent in its env config (+ --set), checked against the env."""
    from kai_drive.pretrained.policy import for_env
    from kai_drive.training import playback
    from kai_drive.training.recipe import parse_set

    model, env_id = for_env(args.pretrained, args.env)
    cfg = {**model.env_config, **(parse_set([f"env_config.{s}" for s in args.set]).get("env_config") or {})}
    venv = playback.make_vec_env(env_id, cfg, 1, "dummy", "eval", model.frame_stack,
                                 render_mode="human" if gui else None)
    model.check_env(venv)
    files = playback.PlayFiles(Path(f"pretrained-{model.agent.name}"), None, None, Path("eval") / "play")
    return files, env_id, venv, model, "pretrained"


if __name__ == "__main__":
    sys.exit(main())
