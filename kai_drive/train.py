"""Train an SB3 agent on a kai-drive env: ``python -m kai_drive.train --env lane-keep``.

Everything a run needs is in its folder ``runs/<env alias>/<algo>_<n>/`` (see
:mod:`kai_drive.training.runs`); TensorBoard panels are described in docs/training.md.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  python -m kai_drive.train --env lane-keep                      # default recipe (agents/ppo.yaml)
  python -m kai_drive.train --env lane-keep --algo sac --timesteps 50000
  python -m kai_drive.train --env lane-keep --set hyperparams.learning_rate=1e-4 \\
      --set env_config.sensors.camera.enabled=false --set policy_kwargs.net_arch=[128,128]
  python -m kai_drive.train --env lane-keep --recipe my_recipe.yaml --n-envs 4 --vec-env subproc
  python -m kai_drive.train --resume runs/lane-keep/ppo_3 --timesteps 500000   # continue a run
  tensorboard --logdir runs                                       # watch the curves

Road seeds: training draws roads in [0, 2^30); periodic evaluation uses roads 2^30 + i; the final
evaluation (--final-eval, final_eval.json) uses roads 2^30 + 2^29 + i, seen by neither.
Exit status: 0 done, 2 bad input (nothing written), 130 interrupted (checkpoint saved).
"""


def _nonneg_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _pos_int(text: str) -> int:
    value = _nonneg_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from kai_drive.training.recipe import ALGOS

    p = argparse.ArgumentParser(
        prog="python -m kai_drive.train",
        description="Train a Stable-Baselines3 agent on a kai-drive env; logs to TensorBoard, saves checkpoints, "
        "evaluates on held-out roads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", help="env alias or id, e.g. lane-keep or KaiDrive/LaneKeep-v0")
    p.add_argument("--algo", default=None, choices=ALGOS, help="algorithm (default: ppo)")
    p.add_argument("--timesteps", type=_pos_int, help="total env steps (default: the recipe's n_timesteps)")
    p.add_argument("--seed", type=_nonneg_int, default=None, help="random seed (default: 0)")
    p.add_argument("--n-envs", type=_pos_int, help="parallel training envs (default: the recipe's)")
    p.add_argument("--vec-env", choices=("subproc", "dummy"), help="subprocesses or one process (default: recipe's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default: auto)")
    p.add_argument("--recipe", type=Path, help="recipe YAML (default: agents/<algo>.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key (dotted, value parsed as YAML); repeatable",
    )
    p.add_argument("--eval-freq", type=_nonneg_int, help="env steps between evaluations (0 = none)")
    p.add_argument("--eval-episodes", type=_pos_int, help="episodes per periodic evaluation")
    p.add_argument("--final-eval", type=_nonneg_int, metavar="N", help="held-out episodes after training (0 = none)")
    p.add_argument("--checkpoint-freq", type=_nonneg_int, help="env steps between checkpoints (0 = only at the end)")
    p.add_argument("--log-folder", type=Path, default=Path("runs"), help="where run folders go (default: runs)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on when stdout is a terminal)",
    )
    p.add_argument("--verbose", action="store_true", help="also print SB3's log tables")
    return p


@dataclass
class Plan:
    """Everything resolved and validated before anything is written."""

    env_id: str
    alias: str
    algo: str
    seed: int
    device: str
    recipe: Any
    recipe_file: str
    env_spec: dict
    progress: bool
    verbose: bool
    log_folder: Path
    resume: Path | None = None
    checkpoint: tuple | None = None
    command: str = ""
    extra: dict = field(default_factory=dict)


class UsageError(Exception):
    """Bad command-line input; printed as ``error: ...`` with exit status 2."""


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.timesteps is not None:
        out["n_timesteps"] = args.timesteps
    if args.n_envs is not None:
        out["n_envs"] = args.n_envs
    if args.vec_env is not None:
        out["vec_env"] = args.vec_env
    ev: dict[str, Any] = {}
    if args.eval_freq is not None:
        ev["freq"] = args.eval_freq
    if args.eval_episodes is not None:
        ev["episodes"] = args.eval_episodes
    if args.final_eval is not None:
        ev["final_episodes"] = args.final_eval
    if ev:
        out["eval"] = ev
    if args.checkpoint_freq is not None:
        out["checkpoint_freq"] = args.checkpoint_freq
    return out


def _device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: torch.cuda.is_available() is False (CPU-only torch or no GPU); use --device cpu"
        )
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def prepare(args: argparse.Namespace, argv: list[str]) -> Plan:
    """Resolve the env, the recipe and the env spec; validate everything. Writes nothing."""
    from kai_drive.catalog import env_yaml, resolve_env
    from kai_drive.specs import SpecError, deep_merge, load_env_spec
    from kai_drive.training.recipe import (
        ENV_ROLES, check_algo_args, env_config_for, load_recipe, parse_set, validate_recipe,
    )

    progress = sys.stdout.isatty() if args.progress is None else args.progress
    command = "python -m kai_drive.train " + " ".join(shlex.quote(a) for a in argv)
    if args.resume is not None:
        from kai_drive.training import runs

        for flag, value in (
            ("--env", args.env),
            ("--algo", args.algo),
            ("--recipe", args.recipe),
            ("--seed", args.seed),
        ):
            if value is not None:
                raise UsageError(f"--resume uses the run's own config.yaml; drop {flag}")
        if args.set:
            raise UsageError(
                "--resume uses the run's own config.yaml; drop --set (start a new run to change the recipe)"
            )
        run_dir = args.resume
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise UsageError(f"--resume {run_dir}: no config.yaml there (is it a run folder made by kai_drive.train?)")
        import yaml

        try:
            cfg = yaml.safe_load(cfg_path.read_text())
            cfg["env_id"], cfg["algo"], cfg["recipe"]
        except (yaml.YAMLError, TypeError, KeyError) as exc:
            raise UsageError(f"--resume {run_dir}: config.yaml is damaged ({type(exc).__name__}: {exc})") from None
        env_id, alias = resolve_env(cfg["env_id"])
        algo = cfg["algo"]
        raw_recipe = dict(cfg["recipe"])
        if "test_env_config" not in raw_recipe:  # a run from before test_env_config: its final eval used eval's
            raw_recipe["test_env_config"] = raw_recipe.get("eval_env_config") or {}
        recipe = validate_recipe(raw_recipe, str(cfg_path), "recipe.")
        ckpt, skipped = runs.latest_readable_checkpoint(run_dir, needs_vecnormalize=recipe.normalisation.enabled)
        if ckpt is None and skipped:
            bad = "; ".join(f"{p} ({why})" for _, p, why in skipped)
            raise UsageError(
                f"--resume {run_dir}: no readable checkpoint: {bad}. Delete the bad file(s) and start a new run "
                "(python -m kai_drive.train --env ...)"
            )
        if ckpt is None:
            raise UsageError(f"--resume {run_dir}: no checkpoint in {run_dir / 'checkpoints'} to resume from")
        for steps, path, why in skipped:
            print(
                f"warning: --resume: {path} is unreadable ({why}); resuming from {ckpt[1].name} instead, "
                f"which loses {steps - ckpt[0]:,} steps ({steps:,} -> {ckpt[0]:,}). Delete or move the bad file "
                "to silence this warning.",
                file=sys.stderr,
                flush=True,
            )
        over = _cli_overrides(args)
        if over:
            recipe = validate_recipe(deep_merge(recipe.model_dump(mode="python"), over), "command line")
        check_algo_args(recipe, algo, str(cfg_path), "recipe.")
        spec = load_env_spec(env_yaml(alias), recipe.env_config)
        return Plan(
            env_id=env_id,
            alias=alias,
            algo=algo,
            seed=int(cfg.get("seed", 0)),
            device=_device(args.device),
            recipe=recipe,
            recipe_file=str(cfg.get("recipe_file", cfg_path)),
            env_spec=spec.model_dump(mode="json"),
            progress=progress,
            verbose=args.verbose,
            log_folder=run_dir.parent,
            resume=run_dir,
            checkpoint=ckpt,
            command=command,
            extra={"renderer": cfg.get("renderer"), "skipped_checkpoints": skipped},
        )
    if not args.env:
        raise UsageError("--env is required (e.g. --env lane-keep), unless you --resume RUN_DIR")
    env_id, alias = resolve_env(args.env)
    algo = args.algo or "ppo"
    overrides = deep_merge(parse_set(args.set), _cli_overrides(args))
    source = "--set/command-line flags"
    recipe, recipe_file = load_recipe(algo, env_id, alias, args.recipe, overrides, override_source=source)
    try:
        spec = load_env_spec(env_yaml(alias), recipe.env_config)
    except SpecError as exc:
        origin = f"{recipe_file}" + (" + --set" if args.set else "")
        raise SpecError(f"env_config (from {origin}) is not valid for {env_id}:\n{exc}") from None
    for role in ENV_ROLES:
        key = f"{role}_env_config"
        if getattr(recipe, key):
            try:
                load_env_spec(env_yaml(alias), env_config_for(recipe, role))
            except SpecError as exc:
                raise SpecError(f"{key} (from {recipe_file}) is not valid for {env_id}:\n{exc}") from None
    return Plan(
        env_id=env_id,
        alias=alias,
        algo=algo,
        seed=0 if args.seed is None else args.seed,
        device=_device(args.device),
        recipe=recipe,
        recipe_file=str(recipe_file),
        env_spec=spec.model_dump(mode="json"),
        progress=progress,
        verbose=args.verbose,
        log_folder=args.log_folder,
        command=command,
    )


# ---------------------------------------------------------------------------------------------
def _close(venv: Any, interrupted: bool) -> None:
    """Close a VecEnv; after an interrupt, stop subprocess workers instead of waiting on their pipes."""
    if venv is None:
        return
    from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnvWrapper

    base = venv
    while isinstance(base, VecEnvWrapper):
        base = base.venv
    if interrupted and isinstance(base, SubprocVecEnv):
        for proc in base.processes:
            proc.terminate()
        for proc in base.processes:
            proc.join(timeout=5)
        base.closed = True
        return
    try:
        venv.close()
    except (EOFError, BrokenPipeError, OSError):
        pass


def _held_out_seeds(base: int, n: int) -> list[int]:
    return [base + i for i in range(n)]


def run(plan: Plan) -> int:
    import torch

    from kai_drive import __version__
    from kai_drive.training import runs
    from kai_drive.training.callbacks import CheckpointCallback, DrivingMetricsCallback, EvalCallback
    from kai_drive.training.envs import (
        EVAL_ROAD_SEED_BASE,
        TEST_ROAD_SEED_BASE,
        TRAIN_ROAD_SEED_HIGH,
        make_vec_env,
        wrap_normalize,
    )
    from kai_drive.training.recipe import OFF_POLICY, algo_kwargs, algorithms, env_config_for, recipe_to_dict

    t_start = time.perf_counter()
    r = plan.recipe
    if r.torch_threads > 0:
        torch.set_num_threads(r.torch_threads)
    cls = algorithms()[plan.algo]
    kwargs = algo_kwargs(r, plan.algo)
    gamma = float(kwargs.get("gamma", 0.99))

    # -- envs --------------------------------------------------------------------------------------
    say = functools.partial(print, flush=True)  # flushed: logs redirected to a file show progress
    # SIGTERM (e.g. from a scheduler) stops like Ctrl-C: checkpoint + final model, exit 130
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    venv = eval_base = eval_env = None
    interrupted = False
    model = None
    try:
        seed_offset = 0 if plan.checkpoint is None else plan.checkpoint[0]
        venv = make_vec_env(
            plan.env_id, env_config_for(r, "train"), r.n_envs, r.vec_env, "train", r.frame_stack, seed=plan.seed + seed_offset,
            encoder=r.encoder,
        )
        vn_path = plan.checkpoint[2] if plan.checkpoint else None
        if plan.checkpoint and r.normalisation.enabled and vn_path is None:
            raise UsageError(f"--resume: {plan.checkpoint[1].name} has no VecNormalize stats beside it")
        venv = wrap_normalize(venv, r.normalisation, gamma, load_from=vn_path)
        renderer, sees_pixels = runs.venv_renderer(venv)
        if sees_pixels:
            from kai_drive.perception.weights import check_weights_renderer, warn_renderer_mismatch

            if plan.resume is not None:
                warn_renderer_mismatch(plan.extra.get("renderer"), renderer, f"the run {plan.resume}")
            fx = (r.policy_kwargs.get("features_extractor_kwargs") or {}).get("pretrained")
            for pretrained in {p for p in (r.encoder.pretrained if r.encoder else None, fx) if p is not None}:
                check_weights_renderer(pretrained, renderer)
        need_eval = r.eval.freq > 0 or r.eval.final_episodes > 0
        if need_eval:
            eval_base = make_vec_env(
                plan.env_id, env_config_for(r, "eval"), r.eval.n_envs, "subproc", "eval", r.frame_stack, encoder=r.encoder
            )
            eval_env = wrap_normalize(eval_base, r.normalisation, gamma, training=False)

        # -- model ---------------------------------------------------------------------------------
        if plan.checkpoint is None:
            if r.action_noise is not None:
                kwargs["action_noise"] = _action_noise(r.action_noise, venv.action_space)
            model = cls(r.policy, venv, seed=plan.seed, device=plan.device, verbose=0, **kwargs)
        else:
            model = cls.load(str(plan.checkpoint[1]), env=venv, device=plan.device, print_system_info=False)
            rb = plan.resume / "checkpoints" / "replay_buffer.pkl"
            if plan.algo in OFF_POLICY and rb.is_file():
                model.load_replay_buffer(str(rb))
        from kai_drive.perception.sb3 import check_lr_scales

        check_lr_scales(model.policy)  # an encoder lr_scale the optimizer would ignore is an error, not a no-op

        # -- the run folder (only now: everything is validated and built) ---------------------------
        if plan.resume is None:
            run_dir = runs.next_run_dir(plan.log_folder, plan.alias, plan.algo)
            config = {
                "kai_drive_version": __version__,
                "env_id": plan.env_id,
                "alias": plan.alias,
                "algo": plan.algo,
                "seed": plan.seed,
                "device": plan.device,
                "recipe_file": plan.recipe_file,
                "recipe": recipe_to_dict(r),
                # the renderer that made the training images (tiny | egl | opengl); play/evaluate/--resume
                # warn when theirs differs
                "renderer": renderer,
                "road_seeds": {
                    "train": f"[0, {TRAIN_ROAD_SEED_HIGH}) drawn per env from seed + rank",
                    "eval": f"{EVAL_ROAD_SEED_BASE} + i, i < eval.episodes",
                    "final_eval": f"{TEST_ROAD_SEED_BASE} + i, i < eval.final_episodes",
                },
                # resolved env overrides per role: training envs; periodic evaluation (picks best_model.zip);
                # final evaluation = the default of evaluate --run / play --run
                "env_configs": {role: env_config_for(r, role) for role in ("train", "eval", "test")},
                "env_spec": plan.env_spec,
            }
            runs.write_yaml(run_dir / "config.yaml", config)
            runs.write_text(run_dir / "command.txt", plan.command + "\n")
        else:
            run_dir = plan.resume
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            old = (run_dir / "command.txt").read_text() if (run_dir / "command.txt").is_file() else ""
            runs.write_text(
                run_dir / "command.txt", old + f"# resumed {stamp} from {plan.checkpoint[1].name}\n{plan.command}\n"
            )

        say(f"run folder: {run_dir}")
        say(
            f"  env {plan.env_id} ({plan.alias}), algo {plan.algo}, seed {plan.seed}, device {plan.device}, "
            f"{r.n_envs} x {r.vec_env} env(s), {r.n_timesteps:,} steps, recipe {plan.recipe_file}"
        )
        say(f"  tensorboard --logdir {run_dir.parent}")
        if plan.checkpoint is not None:
            say(f"  resuming from {plan.checkpoint[1].name} ({model.num_timesteps:,} steps done)")
        from stable_baselines3.common.logger import configure

        model.set_logger(configure(str(run_dir / "tb"), ["tensorboard"] + (["stdout"] if plan.verbose else [])))

        remaining = r.n_timesteps - model.num_timesteps
        callbacks = [DrivingMetricsCallback()]
        ckpt_cb = CheckpointCallback(run_dir, r.checkpoint_freq, r.save_replay_buffer and plan.algo in OFF_POLICY)
        callbacks.append(ckpt_cb)
        if eval_env is not None and r.eval.freq > 0:
            callbacks.append(
                EvalCallback(
                    eval_env,
                    run_dir,
                    r.eval.freq,
                    _held_out_seeds(EVAL_ROAD_SEED_BASE, r.eval.episodes),
                    images=r.eval.images,
                    stop_success_rate=r.eval.stop_success_rate,
                    stop_min_timesteps=r.eval.stop_min_timesteps,
                    start_timesteps=r.eval.start_timesteps,
                )
            )

        # -- train -----------------------------------------------------------------------------------
        t_train = time.perf_counter()
        steps_before = model.num_timesteps
        imitation_s = 0.0
        if r.imitation is not None and plan.checkpoint is None:
            _imitate(plan, r, model, run_dir, callbacks, say)
            imitation_s = time.perf_counter() - t_train
        if remaining <= 0:
            say(
                f"nothing to train: the run is at {model.num_timesteps:,} >= {r.n_timesteps:,} steps "
                "(pass --timesteps with a larger total)"
            )
        else:
            try:
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks,
                    reset_num_timesteps=False,
                    progress_bar=plan.progress,
                    tb_log_name=plan.algo,
                )
            except KeyboardInterrupt:
                interrupted = True
        train_s = time.perf_counter() - t_train

        # -- save (also after Ctrl-C; further Ctrl-C is ignored while saving) ----------------------
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            ckpt_path = ckpt_cb.save() if model.num_timesteps > steps_before or plan.checkpoint is None else None
            runs.save_model(model, run_dir / "final_model.zip")
            from kai_drive.training.envs import find_vec_normalize

            vn = find_vec_normalize(venv)
            if vn is not None:
                runs.save_vecnormalize(vn, run_dir / "vecnormalize.pkl")
            status = {
                "state": "interrupted" if interrupted else "finished",
                "timesteps": int(model.num_timesteps),
                "target_timesteps": int(r.n_timesteps),
                "train_wall_time_s": round(train_s, 2),
                **({"imitation_wall_time_s": round(imitation_s, 2)} if imitation_s else {}),
                "updated": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            runs.write_json(run_dir / "status.json", status)
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, _raise_interrupt)
        if interrupted:
            say(
                f"\ninterrupted at {model.num_timesteps:,} steps: saved {ckpt_path or 'final_model.zip'} and "
                f"final_model.zip; continue with: python -m kai_drive.train --resume {run_dir}"
            )
            return 130
        rl_s = train_s - imitation_s
        say(
            f"trained {model.num_timesteps - steps_before:,} steps in {train_s:.0f} s "
            + (f"(imitation {imitation_s:.0f} s, then RL at " if imitation_s else "(")
            + f"{(model.num_timesteps - steps_before) / max(rl_s, 1e-9):.0f} steps/s); total {model.num_timesteps:,}"
        )

        # -- final evaluation on held-out roads ------------------------------------------------------
        if r.eval.final_episodes > 0 and eval_base is not None:
            _close(venv, False)
            venv = None
            test_base = eval_base
            if env_config_for(r, "test") != env_config_for(r, "eval"):  # e.g. grasp: validation objects -> test objects
                _close(eval_base, False)
                eval_base = test_base = make_vec_env(
                    plan.env_id, env_config_for(r, "test"), r.eval.n_envs, "subproc", "eval", r.frame_stack, encoder=r.encoder
                )
            final_eval(plan, run_dir, test_base, cls, model, gamma, t_start, train_s)
        return 0
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted")
        return 130
    finally:
        _close(venv, interrupted)
        _close(eval_base, interrupted)
        signal.signal(signal.SIGTERM, previous_term)


def _imitate(plan: Plan, r: Any, model: Any, run_dir: Path, callbacks: list, say: Any) -> None:
    """Behaviour cloning + DAgger from the recipe's scripted expert, then one evaluation (step 0)."""
    from kai_drive.training import runs
    from kai_drive.training.callbacks import EvalCallback
    from kai_drive.training.envs import make_vec_env
    from kai_drive.training.imitation import run_imitation
    from kai_drive.training.recipe import env_config_for

    im = r.imitation
    dagger = f"{im.dagger_rounds} DAgger rounds x {im.dagger_episodes} episodes" if im.dagger_rounds else "no DAgger"
    say(f"  imitation: expert {im.expert}, {im.episodes} demonstrations, {dagger}, {im.epochs} epochs per fit")
    t0 = time.perf_counter()

    def make_venv():
        return make_vec_env(plan.env_id, env_config_for(r, "train"), im.n_envs, "subproc", "train", r.frame_stack,
                            seed=plan.seed + 100_003, encoder=r.encoder, expert=im.expert)

    history = run_imitation(model, make_venv, im, seed=plan.seed, log=say, logger=model.logger)
    wall = time.perf_counter() - t0
    runs.write_json(run_dir / "imitation.json", {"wall_time_s": round(wall, 1), "rounds": history})
    say(f"  imitation done in {wall:.0f} s")
    for cb in callbacks:
        if isinstance(cb, EvalCallback):
            cb.init_callback(model)
            cb.run_eval()


def _raise_interrupt(signum, frame):  # SIGTERM -> the same clean stop as Ctrl-C
    raise KeyboardInterrupt


def _action_noise(cfg: Any, action_space: Any) -> Any:
    import numpy as np
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    n = action_space.shape[-1]
    cls = NormalActionNoise if cfg.type == "normal" else OrnsteinUhlenbeckActionNoise
    return cls(mean=np.zeros(n), sigma=cfg.std * np.ones(n))


def final_eval(
    plan: Plan, run_dir: Path, eval_base: Any, cls: Any, model: Any, gamma: float, t_start: float, train_s: float
) -> dict:
    """Evaluate best_model.zip (else the final model) on the held-out test roads; write final_eval.json."""
    from kai_drive.training import runs
    from kai_drive.training.envs import TEST_ROAD_SEED_BASE, wrap_normalize
    from kai_drive.training.evaluation import evaluate
    from kai_drive.training.recipe import env_config_for

    r = plan.recipe
    best = run_dir / "best_model.zip"
    if best.is_file():
        which, agent = "best_model.zip", cls.load(str(best), device=plan.device)
        stats = run_dir / "best_model_vecnormalize.pkl"
    else:
        which, agent = "final_model.zip", model
        stats = run_dir / "vecnormalize.pkl"
    env = wrap_normalize(
        eval_base, r.normalisation, gamma, load_from=stats if stats.is_file() else None, training=False
    )
    seeds = [TEST_ROAD_SEED_BASE + i for i in range(r.eval.final_episodes)]
    res = evaluate(agent, env, seeds)
    res.pop("_frames")
    per_episode = res.pop("per_episode")
    out = {
        "env_id": plan.env_id,
        "algo": plan.algo,
        "model": which,
        "deterministic": True,
        "seed": plan.seed,
        "timesteps": int(model.num_timesteps),
        "train_wall_time_s": round(train_s, 2),
        "eval_wall_time_s": round(res.pop("wall_time_s"), 2),
        "total_wall_time_s": round(time.perf_counter() - t_start, 2),
        "road_seeds": seeds,
        "road_seeds_note": "held out: training roads are < 2^30, periodic-evaluation roads 2^30 + i",
        "env_config": env_config_for(r, "test"),
        "env_config_note": "env_config + test_env_config (periodic evaluations used env_config + eval_env_config)",
        **res,
        "lateral_offset_abs_mean_m": res["lane_offset_abs_mean_m"],
        "lateral_offset_abs_max_m": res["lane_offset_abs_max_m"],
        "per_episode": per_episode,
        "machine": _machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    runs.write_json(run_dir / "final_eval.json", out)
    lo, hi = res["success_rate_ci95"]
    print(
        f"final evaluation ({which}, {res['episodes']} held-out test seeds, deterministic): "
        f"success {res['successes']}/{res['episodes']} = {100 * res['success_rate']:.1f} % "
        f"(95 % CI {100 * lo:.1f}-{100 * hi:.1f} %), route {100 * res['route_completion_mean']:.1f} %, "
        f"collisions {res['collisions']}, off-road {res['off_roads']}, lane invasions {res['lane_invasions']}, "
        f"|offset| mean {res['lane_offset_abs_mean_m']:.2f} m max {res['lane_offset_abs_max_m']:.2f} m; "
        f"wall time {out['total_wall_time_s']:.0f} s -> {run_dir / 'final_eval.json'}"
    )
    return out


def _machine() -> str:
    import platform

    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpu(s), {platform.system()}".replace(
        "  ", " "
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from kai_drive.catalog import UnknownEnvError
    from kai_drive.specs import SpecError
    from kai_drive.training.recipe import RecipeError

    try:
        plan = prepare(args, argv)
    except (UnknownEnvError, RecipeError, SpecError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from kai_drive.perception.spec import SpecMismatchError
    from kai_drive.perception.weights import WeightsError

    try:
        return run(plan)
    except (UsageError, WeightsError, SpecMismatchError) as exc:  # raised before the run folder is written
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
