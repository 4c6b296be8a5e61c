"""Watch a trained agent drive: ``python -m kai_drive.play --run runs/lane-keep/ppo_1``.

With a display the PyBullet GUI opens (``render_mode="human"``); without one (or with ``--record``)
the chase camera of every episode is written to a video: mp4 when ``imageio-ffmpeg`` is installed,
else an animated GIF. Each episode's return, success and route completion are printed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import time
import zipfile
from pathlib import Path

from kai_drive.config import read_yaml_mapping

EPILOG = """\
examples:
  python -m kai_drive.play --run runs/lane-keep/ppo_1                 # best model, 3 episodes
  python -m kai_drive.play --run runs/lane-keep/ppo_1 --which final --episodes 5 --record
  python -m kai_drive.play --model runs/lane-keep/ppo_1/checkpoints/model_30000_steps.zip
  python -m kai_drive.play --model my_agent.zip --env lane-keep --set sensors.camera.enabled=false

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


def _algo_of(model_path: Path) -> str:
    """The SB3 algorithm that saved ``model_path`` (read from the zip's ``data`` JSON)."""
    with zipfile.ZipFile(model_path) as zf:
        data = json.loads(zf.read("data").decode())
    module = str(data.get("policy_class", {}).get("__module__", ""))
    for algo in ("ppo", "sac", "td3"):
        if f".{algo}." in module or module.endswith(f".{algo}"):
            return algo
    if "common.policies" in module:  # ActorCriticPolicy: PPO (or A2C, loadable as PPO for inference)
        return "ppo"
    raise ValueError(f"{model_path}: cannot tell which algorithm saved it (policy module {module!r})")


def _find_run_files(args: argparse.Namespace) -> tuple[Path, Path | None, dict | None, Path]:
    """``(model, vecnormalize or None, config or None, output folder)``.

    ``config`` is the run's config.yaml with ``env_config`` set to the env config of ``args.role`` (default
    ``test``: ``env_config`` + ``test_env_config``; runs from before ``test_env_config`` get their final
    evaluation's, ``eval_env_config``)."""
    from kai_drive.training import runs

    config = None
    if args.run is not None:
        run = args.run
        if not (run / "config.yaml").is_file():
            raise ValueError(f"--run {run}: no config.yaml (not a kai_drive.train run folder)")
        config = _with_role(read_yaml_mapping(run / "config.yaml"), getattr(args, "role", "test"))
        if args.which == "latest":
            ckpt, skipped = runs.latest_readable_checkpoint(run)
            for steps, path, why in skipped:
                print(f"warning: {path} is unreadable ({why}); skipping it", file=sys.stderr)
            if ckpt is None:
                raise ValueError(f"--run {run}: no readable checkpoint in {run / 'checkpoints'}")
            model, stats = ckpt[1], ckpt[2]
        else:
            model = run / f"{args.which}_model.zip"
            if args.which == "best" and not model.is_file():
                print(f"{model.name} not found (no evaluation ran); using final_model.zip")
                model = run / "final_model.zip"
            if not model.is_file():
                raise ValueError(f"--run {run}: {model.name} not found (is the training finished?)")
            stats = (
                model.with_name(model.stem + "_vecnormalize.pkl")
                if model.stem == "best_model"
                else run / "vecnormalize.pkl"
            )
        return model, args.vecnormalize or (stats if stats and stats.is_file() else None), config, run / "videos"
    model = args.model
    if not model.is_file():
        raise ValueError(f"--model {model}: file not found")
    stats = args.vecnormalize
    folder = model.parent
    run = folder.parent if folder.name == "checkpoints" else folder
    if stats is None:
        if model.stem == "best_model":
            cand = folder / "best_model_vecnormalize.pkl"
        elif model.stem.startswith("model_") and model.stem.endswith("_steps"):
            cand = folder / model.name.replace("model_", "vecnormalize_").replace(".zip", ".pkl")
        else:
            cand = folder / "vecnormalize.pkl"
        stats = cand if cand.is_file() else None
    if (run / "config.yaml").is_file():
        config = _with_role(read_yaml_mapping(run / "config.yaml"), getattr(args, "role", "test"))
    return model, stats, config, run / "videos"


def _with_role(config: dict, role: str) -> dict:
    """``config`` with ``env_config`` (top level) = the recipe's env config for ``role`` (dotted keys)."""
    from kai_drive.training.recipe import env_config_for

    out = dict(config)
    out["env_config"] = env_config_for(config.get("recipe") or {}, role)
    out["env_config_role"] = role
    return out


def _writer(out: Path, fps: int):
    """An imageio writer for ``out``; mp4 needs imageio-ffmpeg, else the caller falls back to GIF."""
    import imageio

    if out.suffix == ".gif":
        return imageio.get_writer(out, mode="I", duration=1000.0 / fps, loop=0)
    return imageio.get_writer(out, fps=fps, macro_block_size=1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return play(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def play(args: argparse.Namespace) -> int:
    import numpy as np

    from kai_drive.catalog import resolve_env
    from kai_drive.training.envs import TEST_ROAD_SEED_BASE, make_vec_env
    from kai_drive.training.recipe import Normalisation, algorithms, parse_set

    model_path, stats, config, out_dir = _find_run_files(args)
    if args.episodes < 1:
        raise ValueError("--episodes must be >= 1")
    name = args.env or (config or {}).get("env_id")
    if not name:
        raise ValueError("--env is required when the model has no config.yaml beside it")
    env_id, _ = resolve_env(name)
    recipe = (config or {}).get("recipe", {})
    env_config = dict((config or {}).get("env_config", {}))
    if args.set:
        env_config.update({k: v for k, v in parse_set([f"env_config.{s}" for s in args.set])["env_config"].items()})
    frame_stack = int(recipe.get("frame_stack", 1))
    algo = (config or {}).get("algo") or _algo_of(model_path)

    gui = args.gui or (not args.record and has_display())
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {args.size}: expected WxH, e.g. 320x240") from None
    venv = make_vec_env(env_id, env_config, 1, "dummy", "eval", frame_stack, render_mode="human" if gui else None)
    if stats is not None and not recipe.get("encoder"):  # encoder runs never normalise observations
        from stable_baselines3.common.vec_env import VecNormalize

        venv = VecNormalize.load(str(stats), venv)
        venv.training, venv.norm_reward = False, False
    elif Normalisation(**recipe.get("normalisation", {})).enabled if recipe else False:
        print("warning: the run used VecNormalize but no stats were found; the agent will see raw observations")
    if config is not None:  # the policy saw images from one renderer: say so if this env uses another
        from kai_drive.perception.weights import warn_renderer_mismatch
        from kai_drive.training.runs import run_renderer, venv_renderer

        renderer, sees_pixels = venv_renderer(venv)
        if sees_pixels:
            warn_renderer_mismatch(run_renderer(config), renderer, f"the policy {model_path}")
    model = algorithms()[algo].load(str(model_path), device="cpu")
    if recipe.get("encoder"):  # trained on frozen embeddings: encode this (raw) env's observations
        from kai_drive.perception.sb3 import attach_encoder

        model = attach_encoder(model, venv.observation_space, recipe["encoder"].get("pretrained", "lane-keep"))
    control_hz = venv.get_attr("metadata")[0].get("render_fps", 20)
    fps = args.fps or control_hz

    writer = out = None
    if not gui:
        out = args.out
        if out is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            out = out_dir / f"play_{model_path.stem}_{stamp}.mp4"
        if out.suffix not in (".mp4", ".gif"):
            raise ValueError(f"--out {out}: use a .mp4 or .gif file name")
        if out.suffix == ".mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
            out = out.with_suffix(".gif")
            print(
                "imageio-ffmpeg is not installed, so no mp4: writing a GIF instead (pip install imageio-ffmpeg for mp4)"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = _writer(out, fps if out.suffix == ".mp4" else max(1, fps // 2))

    first = TEST_ROAD_SEED_BASE if args.road_seed is None else args.road_seed
    seeds = [first + i for i in range(args.episodes)]
    venv.env_method("queue_road_seeds", seeds)
    role = (config or {}).get("env_config_role")
    print(
        f"{model_path} ({algo}) on {env_id}" + (f" ({role} config)" if role else "")
        + f", {'GUI' if gui else f'recording {out}'}, road seeds {seeds[0]}..{seeds[-1]}"
    )
    obs = venv.reset()
    results = []
    frame_i = 0
    try:
        for k, road in enumerate(seeds):
            done = False
            while not done:
                if writer is not None:
                    if out.suffix == ".mp4" or frame_i % 2 == 0:
                        writer.append_data(np.asarray(venv.env_method("chase_frame", w, h)[0]))
                    frame_i += 1
                action, _ = model.predict(obs, deterministic=not args.stochastic)
                t0 = time.perf_counter()
                obs, _, dones, infos = venv.step(action)
                done = bool(dones[0])
                if gui:
                    time.sleep(max(0.0, 1.0 / control_hz - (time.perf_counter() - t0)))
            m = infos[0].get("episode_metrics", {})
            results.append(m)
            print(
                f"episode {k + 1}/{len(seeds)} (road {road}): return {m.get('return', float('nan')):.2f}, "
                f"success {'yes' if m.get('success') else 'no'}, route {100 * m.get('route_completion', 0):.0f} %, "
                f"steps {m.get('length', 0)}, |offset| max {m.get('lane_offset_abs_max_m', 0):.2f} m"
                + (", collision" if m.get("collision") else "")
                + (", lane invasion" if m.get("lane_invasions") else "")
            )
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        if writer is not None:
            writer.close()
        venv.close()
    if results:
        sr = np.mean([r.get("success", 0.0) for r in results])
        print(f"success {100 * sr:.0f} % over {len(results)} episode(s)" + (f"; video: {out}" if out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
