"""Training orchestration: the body of ``python -m kai_drive.train`` (the CLI parses flags and calls this).

:func:`prepare` resolves and validates everything (env, recipe, env spec, ``--resume`` checkpoint) into a
:class:`Plan` and writes nothing; :func:`run` trains it, one step per function: build the envs, build or
resume the model, open the run folder (:class:`~kai_drive.training.runs.RunFolder`), callbacks, learn
(Ctrl-C / SIGTERM stop cleanly), save, final evaluation on held-out roads. Exit codes: 0 done, 2 bad input
(:class:`UsageError`, nothing written), 130 interrupted (checkpoint saved).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from stable_baselines3.common.logger import configure
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnvWrapper

from kai_drive import __version__
from kai_drive.catalog import env_yaml, resolve_env, task_family
from kai_drive.metrics import final_eval_aliases, final_summary_line
from kai_drive.perception.sb3 import check_lr_scales
from kai_drive.perception.weights import check_weights_renderer, warn_renderer_mismatch
from kai_drive.config import SpecError, deep_merge
from kai_drive.specs import load_env_spec
from kai_drive.training.algos import OFF_POLICY, algorithm
from kai_drive.training.callbacks import EpisodeMetricsCallback, PeriodicEvalCallback, RunCheckpointCallback
from kai_drive.training.envs import (
    EVAL_ROAD_SEED_BASE, TEST_ROAD_SEED_BASE, TRAIN_ROAD_SEED_HIGH, find_vec_normalize, make_vec_env, wrap_normalize,
)
from kai_drive.training.evaluation import evaluate_on_roads
from kai_drive.training.imitation import run_imitation
from kai_drive.training.recipe import (
    ENV_ROLES, algo_kwargs, check_algo_args, env_config_for, env_mix_for, load_recipe, parse_set, recipe_to_dict, validate_recipe,
)
from kai_drive.training.runs import RunFolder, venv_renderer


def say(*args: Any) -> None:
    print(*args, flush=True)  # flushed: logs redirected to a file show progress


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


# ---------------------------------------------------------------------------------------------
# prepare: flags -> Plan (validated, nothing written)
# ---------------------------------------------------------------------------------------------
def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe keys that ``kai_drive.train``'s own flags (--timesteps, --eval-freq, ...) override."""
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


def train_device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: torch.cuda.is_available() is False (CPU-only torch or no GPU); use --device cpu"
        )
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def prepare(args: argparse.Namespace, argv: list[str]) -> Plan:
    """Resolve the env, the recipe and the env spec of ``kai_drive.train``'s parsed flags ``args``;
    validate everything. Writes nothing. ``argv`` is recorded in command.txt."""
    progress = sys.stdout.isatty() if args.progress is None else args.progress
    command = "python -m kai_drive.train " + " ".join(shlex.quote(a) for a in argv)
    if args.resume is not None:
        return _prepare_resume(args, command, progress)
    if not args.env:
        raise UsageError("--env is required (e.g. --env lane-keep), unless you --resume RUN_DIR")
    env_id, alias = resolve_env(args.env)
    algo = args.algo or "ppo"
    overrides = deep_merge(parse_set(args.set), cli_overrides(args))
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
        env_id=env_id, alias=alias, algo=algo, seed=0 if args.seed is None else args.seed,
        device=train_device(args.device), recipe=recipe, recipe_file=str(recipe_file),
        env_spec=spec.model_dump(mode="json"), progress=progress, verbose=args.verbose,
        log_folder=args.log_folder, command=command, extra=_init_agent(getattr(args, "init", None), env_id, alias, algo),
    )


def _init_agent(init: str | None, env_id: str, alias: str, algo: str) -> dict:
    """``--init pretrained[:NAME]``: ``{"init": NAME}`` after checking the agent exists and fits env and algo."""
    if not init:
        return {}
    kind, _, name = init.partition(":")
    if kind != "pretrained":
        raise UsageError(f"--init {init}: write --init pretrained (the env's shipped agent) or --init pretrained:NAME")
    from kai_drive.pretrained import AgentError, available, read_spec

    name = name or alias
    try:
        spec = read_spec(name)
    except AgentError as exc:
        raise UsageError(f"--init {init}: {exc}") from None
    if spec.env_id != env_id or spec.policy.algo != algo:
        raise UsageError(f"--init {init}: the agent is {spec.policy.algo} on {spec.env_id}, this run {algo} on {env_id} "
                         f"(shipped agents: {available()})")
    return {"init": name}


def _prepare_resume(args: argparse.Namespace, command: str, progress: bool) -> Plan:
    for flag, value in (("--env", args.env), ("--algo", args.algo), ("--recipe", args.recipe), ("--seed", args.seed),
                        ("--init", getattr(args, "init", None))):
        if value is not None:
            raise UsageError(f"--resume uses the run's own config.yaml; drop {flag}")
    if args.set:
        raise UsageError("--resume uses the run's own config.yaml; drop --set (start a new run to change the recipe)")
    run = RunFolder(args.resume)
    cfg, recipe = _resume_config(run)
    env_id, alias = resolve_env(cfg["env_id"])
    algo = cfg["algo"]
    ckpt, skipped = _resume_checkpoint(run, recipe.normalisation.enabled)
    over = cli_overrides(args)
    if over:
        recipe = validate_recipe(deep_merge(recipe.model_dump(mode="python"), over), "command line")
    check_algo_args(recipe, algo, str(run.config_file), "recipe.")
    spec = load_env_spec(env_yaml(alias), recipe.env_config)
    return Plan(
        env_id=env_id, alias=alias, algo=algo, seed=int(cfg.get("seed", 0)), device=train_device(args.device),
        recipe=recipe, recipe_file=str(cfg.get("recipe_file", run.config_file)),
        env_spec=spec.model_dump(mode="json"), progress=progress, verbose=args.verbose,
        log_folder=run.path.parent, resume=run.path, checkpoint=ckpt, command=command,
        extra={"renderer": cfg.get("renderer"), "skipped_checkpoints": skipped},
    )


def _resume_config(run: RunFolder) -> tuple[dict, Any]:
    """``(config.yaml, its recipe validated)`` of the run to resume."""
    if not run.is_run():
        raise UsageError(f"--resume {run.path}: no config.yaml there (is it a run folder made by kai_drive.train?)")
    try:
        cfg = yaml.safe_load(run.config_file.read_text())
        cfg["env_id"], cfg["algo"], cfg["recipe"]
    except (yaml.YAMLError, TypeError, KeyError) as exc:
        raise UsageError(f"--resume {run.path}: config.yaml is damaged ({type(exc).__name__}: {exc})") from None
    raw_recipe = dict(cfg["recipe"])
    if "test_env_config" not in raw_recipe:  # a run from before test_env_config: its final eval used eval's
        raw_recipe["test_env_config"] = raw_recipe.get("eval_env_config") or {}
    return cfg, validate_recipe(raw_recipe, str(run.config_file), "recipe.")


def _resume_checkpoint(run: RunFolder, needs_vecnormalize: bool) -> tuple[tuple, list]:
    """``(newest readable checkpoint, newer unreadable ones)``; warns about each one skipped."""
    ckpt, skipped = run.latest_readable_checkpoint(needs_vecnormalize=needs_vecnormalize)
    if ckpt is None and skipped:
        bad = "; ".join(f"{p} ({why})" for _, p, why in skipped)
        raise UsageError(
            f"--resume {run.path}: no readable checkpoint: {bad}. Delete the bad file(s) and start a new run "
            "(python -m kai_drive.train --env ...)"
        )
    if ckpt is None:
        raise UsageError(f"--resume {run.path}: no checkpoint in {run.checkpoints_dir} to resume from")
    for steps, path, why in skipped:
        print(
            f"warning: --resume: {path} is unreadable ({why}); resuming from {ckpt[1].name} instead, "
            f"which loses {steps - ckpt[0]:,} steps ({steps:,} -> {ckpt[0]:,}). Delete or move the bad file "
            "to silence this warning.",
            file=sys.stderr,
            flush=True,
        )
    return ckpt, skipped


# ---------------------------------------------------------------------------------------------
# run: Plan -> a trained run folder
# ---------------------------------------------------------------------------------------------
@dataclass
class Session:
    """What one training run holds while it runs (closed by :func:`run` whatever happens)."""

    plan: Plan
    cls: Any
    kwargs: dict
    gamma: float
    venv: Any = None
    eval_base: Any = None
    eval_env: Any = None
    model: Any = None
    run: RunFolder | None = None
    renderer: str = ""
    interrupted: bool = False
    t_start: float = field(default_factory=time.perf_counter)
    train_s: float = 0.0
    train_s_before: float = 0.0  # a resumed run: the training time of its earlier sessions (status.json)
    imitation_s: float = 0.0
    steps_before: int = 0


def run(plan: Plan) -> int:
    """Train ``plan``; 0 done, 130 interrupted (checkpoint and final model saved). Raises :class:`UsageError`
    (and weights / spec mismatches) before the run folder is written."""
    t_start = time.perf_counter()
    r = plan.recipe
    if r.torch_threads > 0:
        torch.set_num_threads(r.torch_threads)
    kwargs = algo_kwargs(r, plan.algo)
    s = Session(plan, algorithm(plan.algo), kwargs, float(kwargs.get("gamma", 0.99)), t_start=t_start)
    # SIGTERM (e.g. from a scheduler) stops like Ctrl-C: checkpoint + final model, exit 130
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        build_envs(s)
        build_model(s)
        s.run = open_run_folder(s)
        announce(s)
        callbacks, ckpt_cb = make_callbacks(s)
        learn(s, callbacks)
        ckpt_path = save_run(s, ckpt_cb)
        if s.interrupted:
            say(
                f"\ninterrupted at {s.model.num_timesteps:,} steps: saved {ckpt_path or 'final_model.zip'} and "
                f"final_model.zip; continue with: python -m kai_drive.train --resume {s.run.path}"
            )
            return 130
        rl_s = s.train_s - s.imitation_s
        done = s.model.num_timesteps - s.steps_before
        say(
            f"trained {done:,} steps in {s.train_s:.0f} s "
            + (f"(imitation {s.imitation_s:.0f} s, then RL at " if s.imitation_s else "(")
            + f"{done / max(rl_s, 1e-9):.0f} steps/s); total {s.model.num_timesteps:,}"
        )
        if r.eval.final_episodes > 0 and s.eval_base is not None:
            final_eval(s, _test_envs(s))
        return 0
    except KeyboardInterrupt:
        s.interrupted = True
        say("\ninterrupted")
        return 130
    finally:
        close_venv(s.venv, s.interrupted)
        close_venv(s.eval_base, s.interrupted)
        signal.signal(signal.SIGTERM, previous_term)


def build_envs(s: Session) -> None:
    """Training envs (resumed: VecNormalize stats of the checkpoint) and, when evaluating, eval envs."""
    plan, r = s.plan, s.plan.recipe
    seed_offset = 0 if plan.checkpoint is None else plan.checkpoint[0]
    s.venv = make_vec_env(
        plan.env_id, env_config_for(r, "train"), r.n_envs, r.vec_env, "train", r.frame_stack,
        seed=plan.seed + seed_offset, encoder=r.encoder, modality_dropout=r.modality_dropout,
        env_mix=env_mix_for(r, "train"),
    )
    vn_path = plan.checkpoint[2] if plan.checkpoint else None
    if plan.checkpoint and r.normalisation.enabled and vn_path is None:
        raise UsageError(f"--resume: {plan.checkpoint[1].name} has no VecNormalize stats beside it")
    s.venv = wrap_normalize(s.venv, r.normalisation, s.gamma, load_from=vn_path)
    s.renderer = check_renderers(plan, s.venv)
    if r.eval.freq > 0 or r.eval.final_episodes > 0:
        s.eval_base = make_vec_env(
            plan.env_id, env_config_for(r, "eval"), r.eval.n_envs, "subproc", "eval", r.frame_stack, encoder=r.encoder,
            env_mix=env_mix_for(r, "eval"),
        )
        s.eval_env = wrap_normalize(s.eval_base, r.normalisation, s.gamma, training=False)


def check_renderers(plan: Plan, venv: Any) -> str:
    """The training envs' renderer; when the agent sees pixels, warn if a resumed run trained with another
    and refuse pretrained weights made with another (``WeightsError``)."""
    r = plan.recipe
    renderer, sees_pixels = venv_renderer(venv)
    if sees_pixels:
        if plan.resume is not None:
            warn_renderer_mismatch(plan.extra.get("renderer"), renderer, f"the run {plan.resume}")
        fx = (r.policy_kwargs.get("features_extractor_kwargs") or {}).get("pretrained")
        for pretrained in {p for p in (r.encoder.pretrained if r.encoder else None, fx) if p is not None}:
            check_weights_renderer(pretrained, renderer)
    return renderer


def build_model(s: Session) -> None:
    """A new model, or the checkpoint's (with its replay buffer, off-policy) when resuming."""
    plan, r = s.plan, s.plan.recipe
    if plan.checkpoint is None:
        if r.action_noise is not None:
            s.kwargs["action_noise"] = action_noise(r.action_noise, s.venv.action_space)
        s.model = s.cls(r.policy, s.venv, seed=plan.seed, device=plan.device, verbose=0, **s.kwargs)
        if plan.extra.get("init"):  # fine-tune a shipped agent: its weights and normalisation statistics
            from kai_drive.pretrained.policy import init_model

            agent = init_model(s.model, plan.extra["init"], s.venv, r.encoder.pretrained if r.encoder else None)
            plan.extra["init_record"] = {"pretrained": agent.name, "weights_sha256": agent.weights.sha256}
    else:
        s.model = s.cls.load(str(plan.checkpoint[1]), env=s.venv, device=plan.device, print_system_info=False)
        rb = RunFolder(plan.resume).replay_buffer_file
        if plan.algo in OFF_POLICY and rb.is_file():
            s.model.load_replay_buffer(str(rb))
    check_lr_scales(s.model.policy)  # an encoder lr_scale the optimizer would ignore is an error, not a no-op


def action_noise(cfg: Any, action_space: Any) -> Any:
    n = action_space.shape[-1]
    cls = NormalActionNoise if cfg.type == "normal" else OrnsteinUhlenbeckActionNoise
    return cls(mean=np.zeros(n), sigma=cfg.std * np.ones(n))


def open_run_folder(s: Session) -> RunFolder:
    """A new run folder with config.yaml and command.txt, or the resumed one (command.txt appended). Only
    now: everything is validated and built."""
    plan, r = s.plan, s.plan.recipe
    if plan.resume is not None:
        run = RunFolder(plan.resume)
        s.train_s_before = float(run.status().get("train_wall_time_s") or 0.0)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        run.write_command(f"# resumed {stamp} from {plan.checkpoint[1].name}\n{plan.command}\n", append=True)
        return run
    run = RunFolder.create(plan.log_folder, plan.alias, plan.algo)
    run.write_config({
        "kai_drive_version": __version__,
        "env_id": plan.env_id,
        "alias": plan.alias,
        "algo": plan.algo,
        "seed": plan.seed,
        "device": plan.device,
        "recipe_file": plan.recipe_file,
        "recipe": recipe_to_dict(r),
        # the renderer that made the training images (tiny | egl | opengl); play/evaluate/--resume warn when
        # theirs differs
        "renderer": s.renderer,
        "road_seeds": {
            "train": f"[0, {TRAIN_ROAD_SEED_HIGH}) drawn per env from seed + rank",
            "eval": f"{EVAL_ROAD_SEED_BASE} + i, i < eval.episodes",
            "final_eval": f"{TEST_ROAD_SEED_BASE} + i, i < eval.final_episodes",
        },
        # resolved env overrides per role: training envs; periodic evaluation (picks best_model.zip); final
        # evaluation = the default of evaluate --run / play --run
        "env_configs": {role: env_config_for(r, role) for role in ("train", "eval", "test")},
        **({"init": plan.extra["init_record"]} if "init_record" in plan.extra else {}),  # --init pretrained
        "env_spec": plan.env_spec,
    })
    run.write_command(plan.command + "\n")
    return run


def announce(s: Session) -> None:
    """Print what runs where, and point the model's logger at the run's tb/ folder."""
    plan, r = s.plan, s.plan.recipe
    say(f"run folder: {s.run.path}")
    say(
        f"  env {plan.env_id} ({plan.alias}), algo {plan.algo}, seed {plan.seed}, device {plan.device}, "
        f"{r.n_envs} x {r.vec_env} env(s), {r.n_timesteps:,} steps, recipe {plan.recipe_file}"
    )
    say(f"  tensorboard --logdir {s.run.path.parent}")
    if plan.checkpoint is not None:
        say(f"  resuming from {plan.checkpoint[1].name} ({s.model.num_timesteps:,} steps done)")
    if "init_record" in plan.extra:
        say(f"  initialised from the pretrained agent {plan.extra['init_record']['pretrained']!r} (fine-tuning)")
    outputs = ["tensorboard"] + (["stdout"] if plan.verbose else [])
    s.model.set_logger(configure(str(s.run.file(RunFolder.TB)), outputs))


def make_callbacks(s: Session) -> tuple[list, RunCheckpointCallback]:
    """Episode metrics, checkpoints and (``eval.freq`` > 0) periodic evaluation on held-out roads."""
    plan, r = s.plan, s.plan.recipe
    ckpt_cb = RunCheckpointCallback(s.run.path, r.checkpoint_freq, r.save_replay_buffer and plan.algo in OFF_POLICY)
    callbacks = [EpisodeMetricsCallback(), ckpt_cb]
    if s.eval_env is not None and r.eval.freq > 0:
        callbacks.append(
            PeriodicEvalCallback(
                s.eval_env,
                s.run.path,
                r.eval.freq,
                [EVAL_ROAD_SEED_BASE + i for i in range(r.eval.episodes)],
                images=r.eval.images,
                stop_success_rate=r.eval.stop_success_rate,
                stop_min_timesteps=r.eval.stop_min_timesteps,
                start_timesteps=r.eval.start_timesteps,
            )
        )
    return callbacks, ckpt_cb


def learn(s: Session, callbacks: list) -> None:
    """Imitation warm start (a new run whose recipe asks for it), then RL up to ``n_timesteps``; Ctrl-C during
    ``learn`` sets ``s.interrupted`` instead of raising."""
    plan, r, model = s.plan, s.plan.recipe, s.model
    remaining = r.n_timesteps - model.num_timesteps
    t_train = time.perf_counter()
    s.steps_before = model.num_timesteps
    if r.imitation is not None and plan.checkpoint is None and not plan.extra.get("init"):  # --init: already trained
        imitate(s, callbacks)
        s.imitation_s = time.perf_counter() - t_train
    if remaining <= 0:
        say(
            f"nothing to train: the run is at {model.num_timesteps:,} >= {r.n_timesteps:,} steps "
            "(pass --timesteps with a larger total)"
        )
    else:
        try:
            model.learn(total_timesteps=remaining, callback=callbacks, reset_num_timesteps=False,
                        progress_bar=plan.progress, tb_log_name=plan.algo)
        except KeyboardInterrupt:
            s.interrupted = True
    s.train_s = time.perf_counter() - t_train


def imitate(s: Session, callbacks: list) -> None:
    """Behaviour cloning + DAgger from the recipe's scripted expert, then one evaluation (step 0)."""
    plan, r = s.plan, s.plan.recipe
    im = r.imitation
    dagger = f"{im.dagger_rounds} DAgger rounds x {im.dagger_episodes} episodes" if im.dagger_rounds else "no DAgger"
    say(f"  imitation: expert {im.expert}, {im.episodes} demonstrations, {dagger}, {im.epochs} epochs per fit")
    t0 = time.perf_counter()

    def make_venv():
        return make_vec_env(plan.env_id, env_config_for(r, "train"), im.n_envs, "subproc", "train", r.frame_stack,
                            seed=plan.seed + 100_003, encoder=r.encoder, expert=im.expert,
                            modality_dropout=r.modality_dropout, env_mix=env_mix_for(r, "train"))

    history = run_imitation(s.model, make_venv, im, seed=plan.seed, log=say, logger=s.model.logger)
    wall = time.perf_counter() - t0
    s.run.write_imitation({"wall_time_s": round(wall, 1), "rounds": history})
    say(f"  imitation done in {wall:.0f} s")
    for cb in callbacks:
        if isinstance(cb, PeriodicEvalCallback):
            cb.init_callback(s.model)
            cb.run_eval()


def save_run(s: Session, ckpt_cb: RunCheckpointCallback) -> Path | None:
    """Checkpoint (when steps were made), final model (+ VecNormalize) and status.json -- also after Ctrl-C;
    further Ctrl-C / SIGTERM is ignored while saving. Returns the checkpoint written, if any."""
    plan, r, model = s.plan, s.plan.recipe, s.model
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ckpt_path = ckpt_cb.save() if model.num_timesteps > s.steps_before or plan.checkpoint is None else None
        s.run.save("final", model, find_vec_normalize(s.venv))
        s.run.write_status({
            "state": "interrupted" if s.interrupted else "finished",
            "timesteps": int(model.num_timesteps),
            "target_timesteps": int(r.n_timesteps),
            "train_wall_time_s": round(s.train_s_before + s.train_s, 2),  # all sessions of the run
            **({"imitation_wall_time_s": round(s.imitation_s, 2)} if s.imitation_s else {}),
            "updated": datetime.datetime.now().isoformat(timespec="seconds"),
        })
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    return ckpt_path


def _test_envs(s: Session) -> Any:
    """Close the training envs; the final evaluation's envs: the eval envs, rebuilt with the test config when
    it differs (e.g. grasp: validation objects -> test objects)."""
    plan, r = s.plan, s.plan.recipe
    close_venv(s.venv, False)
    s.venv = None
    if env_config_for(r, "test") != env_config_for(r, "eval"):
        close_venv(s.eval_base, False)
        s.eval_base = make_vec_env(
            plan.env_id, env_config_for(r, "test"), r.eval.n_envs, "subproc", "eval", r.frame_stack, encoder=r.encoder,
            env_mix=env_mix_for(r, "test"),
        )
    return s.eval_base


def final_eval(s: Session, test_base: Any) -> dict:
    """Evaluate best_model.zip (else the final model) on the held-out test roads; write final_eval.json."""
    plan, r, run = s.plan, s.plan.recipe, s.run
    which, model_file, stats = run.best_or_final()
    agent = s.cls.load(str(model_file), device=plan.device) if which == "best_model.zip" else s.model
    env = wrap_normalize(test_base, r.normalisation, s.gamma, load_from=stats if stats.is_file() else None,
                         training=False)
    seeds = [TEST_ROAD_SEED_BASE + i for i in range(r.eval.final_episodes)]
    family = task_family(plan.env_id)
    res = evaluate_on_roads(agent, env, seeds)
    res.pop("_frames")
    per_episode = res.pop("per_episode")
    out = {
        "env_id": plan.env_id,
        "algo": plan.algo,
        "model": which,
        "deterministic": True,
        "seed": plan.seed,
        "timesteps": int(s.model.num_timesteps),
        "train_wall_time_s": round(s.train_s_before + s.train_s, 2),  # all sessions of the run
        "eval_wall_time_s": round(res.pop("wall_time_s"), 2),
        "total_wall_time_s": round(time.perf_counter() - s.t_start, 2),
        "road_seeds": seeds,
        "road_seeds_note": "held out: training roads are < 2^30, periodic-evaluation roads 2^30 + i",
        "env_config": env_config_for(r, "test"),
        "env_config_note": "env_config + test_env_config (periodic evaluations used env_config + eval_env_config)",
        **res,
        **final_eval_aliases(res, family),
        "per_episode": per_episode,
        "machine": machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    path = run.write_final_eval(out)
    lo, hi = res["success_rate_ci95"]
    print(
        f"final evaluation ({which}, {res['episodes']} held-out test seeds, deterministic): "
        f"success {res['successes']}/{res['episodes']} = {100 * res['success_rate']:.1f} % "
        f"(95 % CI {100 * lo:.1f}-{100 * hi:.1f} %), {final_summary_line(res, family)}; "
        f"wall time {out['total_wall_time_s']:.0f} s -> {path}"
    )
    return out


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpu(s), {platform.system()}".replace(
        "  ", " "
    )


def close_venv(venv: Any, interrupted: bool) -> None:
    """Close a VecEnv; after an interrupt, stop subprocess workers instead of waiting on their pipes."""
    if venv is None:
        return
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


def _raise_interrupt(signum, frame):  # SIGTERM -> the same clean stop as Ctrl-C
    raise KeyboardInterrupt
