"""A pretraining run folder, start to end (the body of ``python -m kai_drive.pretrain``).

The folder holds: recipe.yaml, data.npz (training frames) and probe_data.npz (held-out roads), tb/
(TensorBoard), checkpoint.pt (resumable), encoder.pt + encoder.json (weights + manifest) and probes.json /
probes.md. :func:`run_pretraining` does it all: :func:`open_run` makes or reopens the folder, :func:`train` runs the objective
(:class:`~kai_drive.perception.pretraining.Pretrainer`) to the recipe's iteration count, checkpointing as it
goes, :func:`finish` probes the encoder and writes the weights, :func:`ship` copies them into the package.
Problems with the folder raise :class:`~kai_drive.perception.pretrain_data.PretrainError`.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import kai_drive  # noqa: F401  (registers the envs)
from kai_drive.catalog import resolve_env
from kai_drive.perception.encoders import MultiModalEncoder
from kai_drive.perception.pretrain_data import PretrainError, load_or_collect, load_or_collect_shifts
from kai_drive.perception.pretrain_recipe import PretrainRecipe, default_recipe, load_recipe
from kai_drive.perception.pretraining import PairSampler, Pretrainer, batch_from
from kai_drive.perception.probes import probe_table, run_probes
from kai_drive.files import atomic as atomic_write, write_json
from kai_drive.perception.weights import WEIGHTS_DIR, load_encoder, resolve_device, save_weights

LOG = logging.getLogger("kai_drive.pretrain")


def run_pretraining(env: str = "lane-keep", recipe_file: str | None = None, out: str | None = None,
                    resume: str | None = None, probe_only_weights: str | None = None, probe_only_run: bool = False,
                    iterations: int | None = None, probes: bool = True, ship_weights: bool = False,
                    progress: bool = True, overwrite: bool = False) -> Path:
    """A pretraining run from start to end (``python -m kai_drive.pretrain``); returns the run folder.

    ``probe_only_run``: collect (or reuse) the folder's data and probe ``probe_only_weights`` (default: the
    env's shipped weights) instead of training."""
    recipe, folder = open_run(env, recipe_file, out, resume, probe_only_run)
    if iterations:
        recipe.train.iterations = iterations
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    torch.manual_seed(recipe.seed)
    device = resolve_device(recipe.device)
    data, probe, renderer = load_or_collect(recipe, folder, progress=progress)
    LOG.info("data: %d training frames (%d episodes), %d probe frames (%d held-out roads)", len(data["episode"]),
             len(np.unique(data["episode"])), len(probe["episode"]), len(np.unique(probe["episode"])))
    shifts = load_or_collect_shifts(recipe, folder, progress=progress) if (probes or probe_only_run) else {}
    if probe_only_run:
        print(probe_table(probe_only(recipe, folder, data, probe, probe_only_weights, shifts)))
        return folder
    trainer = make_trainer(recipe, folder, data, device)
    writer = SummaryWriter(str(folder / "tb"))
    train_s = train(trainer, recipe, folder, data, device, writer, progress=progress)
    wpath = finish(trainer, recipe, folder, data, probe, renderer, device, train_s, probes=probes, shifts=shifts)
    if ship_weights:
        ship(wpath, recipe.run_name(), overwrite=overwrite)
    writer.close()
    return folder


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_run(env: str, recipe_file: str | None, out: str | None, resume: str | None,
             probe_only: bool = False) -> tuple[PretrainRecipe, Path]:
    """``(recipe, folder)``: ``resume`` reopens a folder with its own recipe.yaml; otherwise the recipe
    (``recipe_file`` or the env's default) goes into ``out`` (default ``runs/pretrain/<alias>_<time>``)."""
    if resume:
        folder = Path(resume)
        if not (folder / "recipe.yaml").is_file():
            raise PretrainError(f"--resume {folder}: no recipe.yaml there (is it a pretraining run folder?)")
        recipe = load_recipe(folder / "recipe.yaml")
        if recipe_file and load_recipe(recipe_file) != recipe:
            raise PretrainError(
                f"--recipe {recipe_file} differs from {folder / 'recipe.yaml'}; resume uses the run's own recipe")
        return recipe, folder
    recipe = load_recipe(Path(recipe_file) if recipe_file else default_recipe(env))
    alias = recipe.run_name()
    folder = Path(out) if out else Path("runs/pretrain") / f"{alias}_{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "recipe.yaml").is_file() and load_recipe(folder / "recipe.yaml") != recipe and not probe_only:
        raise PretrainError(f"{folder} holds a run of another recipe; choose another --out or --resume {folder}")
    if not (folder / "recipe.yaml").is_file():
        atomic_write(folder / "recipe.yaml",
                     lambda tmp: tmp.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)))
    return recipe, folder


def env_space(recipe: PretrainRecipe) -> tuple[Any, str]:
    """``(observation space, renderer)`` of the recipe's (first) env (default config); every collection env must
    have the same observation space (one encoder reads them all), else PretrainError names the odd one."""
    space = renderer = None
    for alias in recipe.env_aliases():
        env = gymnasium.make(resolve_env(alias)[0], config=recipe.overrides_for(alias))
        if space is None:
            space, renderer = env.observation_space, str(env.unwrapped.renderer)
        elif env.observation_space != space:
            env.close()
            raise PretrainError(f"env {alias!r} has observation space {env.observation_space}, the first env "
                                f"{recipe.env_aliases()[0]!r} has {space}: one encoder cannot read both")
        env.close()
    return space, renderer


def probe_only(recipe: PretrainRecipe, out: Path, data: dict, probe: dict, weights: str | None,
               shifts: dict | None = None) -> dict:
    """Probe shipped or given weights (``weights``; default: the recipe's shipped ones) on the folder's data
    (beside a random init and the recipe's ``probe.compare`` weights); writes probes.json."""
    space, renderer = env_space(recipe)
    encoder = load_encoder(space, weights or recipe.run_name(), renderer=renderer)
    res = run_probes(encoder, recipe, data, probe, recipe.seed, others=compare_encoders(recipe, space, renderer),
                     shifts=shifts)
    write_json(out / "probes.json", res)
    return res


def compare_encoders(recipe: PretrainRecipe, space, renderer: str) -> dict[str, MultiModalEncoder]:
    """``{name: encoder}`` of the recipe's ``probe.compare`` weights (shipped names or paths)."""
    return {str(w): load_encoder(space, w, renderer=renderer) for w in recipe.probe.compare}


def make_trainer(recipe: PretrainRecipe, out: Path, data: dict, device: torch.device) -> Pretrainer:
    """A new encoder (state normalisation from the data) and its trainer, resumed from checkpoint.pt if any."""
    encoder = MultiModalEncoder(env_space(recipe)[0], recipe.encoder)
    if "state" in data:
        encoder.set_state_normalisation(data["state"].mean(0), data["state"].std(0))
    trainer = Pretrainer(encoder, recipe.train, device, seed=recipe.seed)
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        try:
            trainer.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
        except Exception as exc:  # truncated or foreign file
            raise PretrainError(
                f"error: {ckpt} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); delete it to restart the "
                f"pretraining from iteration 0 (the collected data in {out} is kept)"
            ) from None
        LOG.info("resumed from %s at iteration %d", ckpt, trainer.iteration)
    return trainer


def train(trainer: Pretrainer, recipe: PretrainRecipe, out: Path, data: dict, device: torch.device,
          writer: SummaryWriter, progress: bool = True) -> float:
    """Train to ``train.iterations`` (logging to ``writer``, checkpointing atomically); returns the seconds."""
    t = recipe.train
    keys = trainer.encoder.keys
    tensors = {k: torch.as_tensor(data[k]).to(device) for k in keys}
    lab = torch.as_tensor(np.stack([data["lateral_offset_m"], data["heading_error_rad"]], 1)).to(device)
    sampler = PairSampler(data["episode"], t.k_max, np.random.default_rng(recipe.seed + trainer.iteration))
    bar = tqdm(total=t.iterations, initial=trainer.iteration, desc="pretrain", disable=not progress, unit="it")
    t0, it0 = time.time(), trainer.iteration
    while trainer.iteration < t.iterations:
        ia, ip = sampler.sample(t.batch_size)
        logs = trainer.step(batch_from(tensors, ia, keys), batch_from(tensors, ip, keys),
                            lab[torch.as_tensor(ia)] if trainer.aux is not None else None)
        bar.update(1)
        if trainer.iteration % t.log_every == 0 or trainer.iteration == t.iterations:
            for k, v in logs.items():
                writer.add_scalar(f"loss/{k}", v, trainer.iteration)
            writer.add_scalar("perf/iterations_per_s", (trainer.iteration - it0) / max(time.time() - t0, 1e-9),
                              trainer.iteration)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
        if trainer.iteration % t.checkpoint_every == 0 or trainer.iteration == t.iterations:
            state = trainer.state_dict()
            # a crash never leaves a half-written checkpoint
            atomic_write(out / "checkpoint.pt", lambda tmp: torch.save(state, tmp))
    bar.close()
    return time.time() - t0


def finish(trainer: Pretrainer, recipe: PretrainRecipe, out: Path, data: dict, probe: dict, renderer: str,
           device: torch.device, train_s: float, probes: bool = True, shifts: dict | None = None) -> Path:
    """Probe the trained encoder (``probes``: probes.json / probes.md, printed) and write encoder.pt with its
    manifest; returns the weights file."""
    t = recipe.train
    aliases = recipe.env_aliases()
    manifest = {
        "env": resolve_env(aliases[0])[0] if len(aliases) == 1 else ", ".join(resolve_env(a)[0] for a in aliases),
        "alias": recipe.run_name(),
        "envs": [resolve_env(a)[0] for a in aliases],
        "date": utc_now(),
        "renderer": renderer,  # the renderer that made the training images: loaders warn when theirs differs
        "recipe": recipe.model_dump(mode="json"),
        "data": {"frames": int(len(data["episode"])), "episodes": int(len(np.unique(data["episode"]))),
                 "probe_frames": int(len(probe["episode"])), "probe_episodes": int(len(np.unique(probe["episode"])))},
        "train": {"iterations": trainer.iteration, "seconds_this_session": round(train_s, 1), "device": str(device)},
        "objective": "ATC temporal InfoNCE (camera, lidar, fused; EMA target) + camera-lidar cross-modal InfoNCE"
                     + (f" + privileged aux x{t.aux_privileged_weight}" if trainer.aux is not None else ""),
    }
    encoder = trainer.encoder.cpu()
    if probes:
        space, renderer_now = env_space(recipe)
        res = run_probes(encoder, recipe, data, probe, recipe.seed,
                         others=compare_encoders(recipe, space, renderer_now), shifts=shifts)
        write_json(out / "probes.json", res)
        table = probe_table(res)
        atomic_write(out / "probes.md", lambda tmp: tmp.write_text(table + "\n"))
        print(table)
        def rounded(r):  # {features: {label: scores}} -> rounded r2 / rmse
            return {fs: {lab: {"r2": round(s["r2"], 4), "rmse": round(s["rmse"], 4)} for lab, s in x.items()}
                    for fs, x in r.items()}

        manifest["probes"] = {init: rounded(res[init]) for init in res["encoders"]}
        manifest["probes"]["split"] = res["split"]
        if res.get("shift"):
            manifest["probes"]["shift"] = {c: {init: rounded(r) for init, r in v.items()} for c, v in res["shift"].items()}
        if res.get("lead_gap"):
            manifest["probes"]["lead_gap"] = {c: {init: {fs: {"r2": round(s["r2"], 4), "rmse": round(s["rmse"], 4)}
                                                         for fs, s in r.items()} for init, r in v.items()}
                                              for c, v in res["lead_gap"].items()}
            manifest["probes"]["lead_gap_frames"] = res["lead_gap_frames"]
    wpath = save_weights(encoder, out / "encoder.pt", manifest)
    LOG.info("weights: %s (%.2f MB)", wpath, wpath.stat().st_size / 1e6)
    return wpath


def ship(wpath: Path, alias: str, overwrite: bool = False) -> None:
    """Copy the weights and their manifest to kai_drive/perception/weights/<alias>.pt/.json.

    Refuses to replace different shipped weights of that name unless ``overwrite``: shipped agents and
    recipes pin a weights file's sha256, so new weights get a new name (the recipe's ``name:``)."""
    dst = WEIGHTS_DIR / f"{alias}.pt"
    if dst.is_file() and not overwrite and dst.read_bytes() != wpath.read_bytes():
        raise PretrainError(f"--ship: {dst} exists and differs from {wpath}; shipped agents pin its sha256. Give the "
                            "recipe another `name:` (weights are shipped as <name>.pt), or pass --overwrite to replace it")
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    for src, dst in ((wpath, WEIGHTS_DIR / f"{alias}.pt"), (wpath.with_suffix(".json"), WEIGHTS_DIR / f"{alias}.json")):
        atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
    LOG.info("shipped to %s", WEIGHTS_DIR / f"{alias}.pt")
