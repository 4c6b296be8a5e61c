"""Self-supervised pretraining of the perception encoders, and linear probes of their features.

    python -m kai_drive.pretrain --env lane-keep                      # recipe configs/pretrain/lane-keep.yaml
    python -m kai_drive.pretrain --recipe configs/pretrain/lane-keep.yaml --out runs/pretrain/lk
    python -m kai_drive.pretrain --resume runs/pretrain/lk            # continue from its checkpoint
    python -m kai_drive.pretrain --probe-only --weights lane-keep --out runs/pretrain/lk

A run folder holds: recipe.yaml, data.npz (training frames) and probe_data.npz (held-out roads),
tb/ (TensorBoard), checkpoint.pt (resumable), encoder.pt + encoder.json (weights + manifest) and
probes.json. ``--ship`` copies the weights into kai_drive/perception/weights/<env>.pt/.json.
See docs/perception.md.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

LOG = logging.getLogger("kai_drive.pretrain")


def default_recipe(env: str) -> Path:
    from kai_drive.catalog import catalog_dir, resolve_env

    alias = resolve_env(env)[1]
    path = catalog_dir("configs") / "pretrain" / f"{alias}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no pretraining recipe for env '{alias}' at {path}; pass --recipe PATH")
    return path


def _savez(path: Path, data: dict) -> None:
    """``np.savez`` atomically: a crash never leaves a truncated data file that a resume would trust."""
    from kai_drive.perception.weights import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a bare name
            np.savez(fh, **data)

    atomic_write(path, write)


def _loadz(path: Path) -> dict:
    """A data file of this folder; a damaged one is an error naming it and the fix."""
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # truncated zip, bad CRC, not an npz
        raise SystemExit(
            f"error: {path} is unreadable ({type(exc).__name__}: {exc}); delete it and run again to collect it anew"
        ) from None


def load_or_collect(recipe, out: Path, progress: bool = True) -> tuple[dict, dict, str]:
    """``(data, probe, renderer)``: training frames (randomised sensors, training roads), probe frames (clean,
    held-out roads) and the renderer that made the training images ("tiny" for files that predate the key)."""
    from kai_drive.perception.pretraining import PROBE_ROAD_SEED_BASE, collect
    from kai_drive.perception.weights import LEGACY_RENDERER

    c = recipe.collect
    data_path, probe_path = out / "data.npz", out / "probe_data.npz"
    if data_path.is_file():
        data = _loadz(data_path)
    else:
        rng = np.random.default_rng(recipe.seed)
        seeds = rng.integers(0, 2**30, c.episodes).tolist()
        t0 = time.time()
        data = collect(recipe, c.episodes, seeds, randomize=True, seed=recipe.seed, progress=progress)
        LOG.info("collected %d frames in %.0f s", len(data["episode"]), time.time() - t0)
        _savez(data_path, data)
    if probe_path.is_file():
        probe = _loadz(probe_path)
    else:
        seeds = [PROBE_ROAD_SEED_BASE + i for i in range(c.probe_episodes)]
        probe = collect(recipe, c.probe_episodes, seeds, randomize=False, seed=recipe.seed + 1, progress=progress)
        _savez(probe_path, probe)
    renderer = str(data.pop("renderer", LEGACY_RENDERER))
    probe.pop("renderer", None)
    return data, probe, renderer


def run_probes(encoder, recipe, data: dict, probe: dict, seed: int) -> dict[str, Any]:
    """Probe ``encoder`` and a random-init encoder of the same shape (same state normalisation)."""
    import torch

    from kai_drive.perception.encoders import MultiModalEncoder
    from kai_drive.perception.pretraining import LABELS
    from kai_drive.perception.probes import probe_encoder

    n = len(data["episode"])
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(recipe.probe.train_frames, n), replace=False))
    fit = {k: v[take] for k, v in data.items()}
    labels = tuple(k for k in LABELS if k != "speed_mps")
    torch.manual_seed(seed + 12345)
    random_enc = MultiModalEncoder(_space_of(encoder), encoder.config, encoder.keys)
    if "state" in encoder.encoders:
        random_enc.encoders["state"].load_state_dict(
            {k: v for k, v in encoder.encoders["state"].state_dict().items() if k in ("mean", "std")}, strict=False)
    res = {
        "pretrained": probe_encoder(encoder, fit, probe, labels, recipe.probe.val_fraction),
        "random_init": probe_encoder(random_enc, fit, probe, labels, recipe.probe.val_fraction),
        "fit_frames": int(len(take)),
        "test_frames": int(len(probe["episode"])),
        "test_episodes": int(len(np.unique(probe["episode"]))),
        "split": "fit: training roads (randomised sensors); test: held-out road seeds, clean sensors",
    }
    return res


def _space_of(encoder):
    from gymnasium import spaces

    return spaces.Dict({k: spaces.Box(0, 255 if v["dtype"] == "uint8" else np.inf, tuple(v["shape"]), np.dtype(v["dtype"]))
                        for k, v in encoder.spec.items()})


def probe_table(res: dict[str, Any]) -> str:
    """Markdown table of probe scores: rows feature set x init, columns label R^2 / RMSE."""
    labels = list(next(iter(res["pretrained"].values())))
    units = {"lateral_offset_m": "m", "heading_error_rad": "rad", "edge_distance_m": "m"}
    head = "| features | encoder | " + " | ".join(f"{lab} R² | RMSE [{units.get(lab, '')}]" for lab in labels) + " |"
    sep = "|---|---|" + "---:|---:|" * len(labels)
    rows = [head, sep]
    for fs in res["pretrained"]:
        for init in ("pretrained", "random_init"):
            cells = " | ".join(f"{res[init][fs][lab]['r2']:.3f} | {res[init][fs][lab]['rmse']:.3f}" for lab in labels)
            rows.append(f"| {fs} | {init} | {cells} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kai_drive.pretrain", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="lane-keep", help="env alias or id (chooses the default recipe)")
    ap.add_argument("--recipe", help="recipe YAML (default configs/pretrain/<env>.yaml)")
    ap.add_argument("--out", help="run folder (default runs/pretrain/<env>_<time>)")
    ap.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    ap.add_argument("--probe", action="store_true", help="(default on) run the linear probes after training")
    ap.add_argument("--no-probe", action="store_true", help="skip the probes")
    ap.add_argument("--probe-only", action="store_true", help="only probe --weights on the data of --out")
    ap.add_argument("--weights", default=None, help="with --probe-only: shipped name or .pt path")
    ap.add_argument("--iterations", type=int, help="override train.iterations")
    ap.add_argument("--ship", action="store_true", help="copy the weights to kai_drive/perception/weights/<env>.pt")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import torch
    import yaml

    from kai_drive.catalog import resolve_env
    from kai_drive.perception.encoders import MultiModalEncoder
    from kai_drive.perception.pretraining import (Pretrainer, PairSampler, batch_from, load_recipe, save_json,
                                                  utc_now)
    from kai_drive.perception.weights import WEIGHTS_DIR, atomic_write, load_encoder, resolve_device, save_weights

    # -- recipe and run folder ----------------------------------------------------------------------
    if args.resume:
        out = Path(args.resume)
        if not (out / "recipe.yaml").is_file():
            raise SystemExit(f"--resume {out}: no recipe.yaml there (is it a pretraining run folder?)")
        recipe = load_recipe(out / "recipe.yaml")
        if args.recipe and load_recipe(args.recipe) != recipe:
            raise SystemExit(f"--recipe {args.recipe} differs from {out / 'recipe.yaml'}; resume uses the run's own recipe")
    else:
        recipe_path = Path(args.recipe) if args.recipe else default_recipe(args.env)
        recipe = load_recipe(recipe_path)
        alias = resolve_env(recipe.env)[1]
        out = Path(args.out) if args.out else Path("runs/pretrain") / f"{alias}_{time.strftime('%Y%m%d-%H%M%S')}"
        out.mkdir(parents=True, exist_ok=True)
        if (out / "recipe.yaml").is_file() and load_recipe(out / "recipe.yaml") != recipe and not args.probe_only:
            raise SystemExit(f"{out} holds a run of another recipe; choose another --out or --resume {out}")
        if not (out / "recipe.yaml").is_file():
            atomic_write(out / "recipe.yaml",
                         lambda tmp: tmp.write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)))
    if args.iterations:
        recipe.train.iterations = args.iterations
    alias = resolve_env(recipe.env)[1]
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    torch.manual_seed(recipe.seed)
    device = resolve_device(recipe.device)
    data, probe, renderer = load_or_collect(recipe, out, progress=not args.quiet)
    LOG.info("data: %d training frames (%d episodes), %d probe frames (%d held-out roads)", len(data["episode"]),
             len(np.unique(data["episode"])), len(probe["episode"]), len(np.unique(probe["episode"])))

    if args.probe_only:
        import gymnasium

        import kai_drive  # noqa: F401

        env = gymnasium.make(resolve_env(recipe.env)[0])
        space, env_renderer = env.observation_space, env.unwrapped.renderer
        env.close()
        encoder = load_encoder(space, args.weights or alias, renderer=env_renderer)
        res = run_probes(encoder, recipe, data, probe, recipe.seed)
        save_json(out / "probes.json", res)
        print(probe_table(res))
        return 0

    # -- model ---------------------------------------------------------------------------------------
    import gymnasium

    import kai_drive  # noqa: F401

    env = gymnasium.make(resolve_env(recipe.env)[0])
    space = env.observation_space
    env.close()
    encoder = MultiModalEncoder(space, recipe.encoder)
    if "state" in data:
        encoder.set_state_normalisation(data["state"].mean(0), data["state"].std(0))
    trainer = Pretrainer(encoder, recipe.train, device, seed=recipe.seed)
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        try:
            trainer.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True))
        except Exception as exc:  # truncated or foreign file
            raise SystemExit(
                f"error: {ckpt} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); delete it to restart the "
                f"pretraining from iteration 0 (the collected data in {out} is kept)"
            ) from None
        LOG.info("resumed from %s at iteration %d", ckpt, trainer.iteration)
    keys = encoder.keys
    tensors = {k: torch.as_tensor(data[k]).to(device) for k in keys}
    lab = torch.as_tensor(np.stack([data["lateral_offset_m"], data["heading_error_rad"]], 1)).to(device)
    sampler = PairSampler(data["episode"], recipe.train.k_max, np.random.default_rng(recipe.seed + trainer.iteration))

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    writer = SummaryWriter(str(out / "tb"))
    t = recipe.train
    bar = tqdm(total=t.iterations, initial=trainer.iteration, desc="pretrain", disable=args.quiet, unit="it")
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
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))  # a crash never leaves a half-written checkpoint
    bar.close()
    train_s = time.time() - t0

    manifest = {
        "env": resolve_env(recipe.env)[0],
        "alias": alias,
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
    if not args.no_probe:
        res = run_probes(encoder, recipe, data, probe, recipe.seed)
        save_json(out / "probes.json", res)
        table = probe_table(res)
        atomic_write(out / "probes.md", lambda tmp: tmp.write_text(table + "\n"))
        print(table)
        manifest["probes"] = {init: {fs: {lab: {"r2": round(s["r2"], 4), "rmse": round(s["rmse"], 4)}
                                          for lab, s in r.items()} for fs, r in res[init].items()}
                              for init in ("pretrained", "random_init")}
        manifest["probes"]["split"] = res["split"]
    wpath = save_weights(encoder, out / "encoder.pt", manifest)
    LOG.info("weights: %s (%.2f MB)", wpath, wpath.stat().st_size / 1e6)
    if args.ship:
        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        for src, dst in ((wpath, WEIGHTS_DIR / f"{alias}.pt"), (wpath.with_suffix(".json"), WEIGHTS_DIR / f"{alias}.json")):
            atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
        LOG.info("shipped to %s", WEIGHTS_DIR / f"{alias}.pt")
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
