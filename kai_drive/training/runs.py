"""Run folders ``runs/<alias>/<algo>_<n>/`` and atomic saving of everything inside them.

Layout of a run folder::

    config.yaml                  resolved recipe + env spec + seed + renderer + env config per role (train,
                                 eval = periodic evaluations, test = final evaluation); what --resume reads
    command.txt                  the command line(s) that trained this run (one per resume)
    tb/                          TensorBoard events (SB3 logger; resumed runs append here)
    checkpoints/model_<N>_steps.zip, vecnormalize_<N>_steps.pkl, replay_buffer.pkl (off-policy)
    best_model.zip (+ best_model_vecnormalize.pkl)      best periodic evaluation
    final_model.zip (+ vecnormalize.pkl)                 end of training (also after Ctrl-C)
    evaluations.json / evaluations.npz                   periodic evaluation history
    final_eval.json                                      held-out evaluation after training
    status.json                                          finished | interrupted, timesteps, wall time
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from kai_drive.files import atomic  # noqa: F401  (re-exported: run folders write through it)

CHECKPOINT_RE = re.compile(r"^model_(\d+)_steps\.zip$")
#: observation keys made by the renderer (a policy that sees none of them does not care which renderer)
IMAGE_KEYS = ("camera", "depth", "segmentation")


def next_run_dir(log_folder: Path, alias: str, algo: str) -> Path:
    """Create and return ``log_folder/alias/algo_<n>`` with the next free ``n`` (starting at 1)."""
    parent = Path(log_folder) / alias
    parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(algo)}_(\d+)$")
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := pattern.match(p.name))]
    n = max(taken, default=0) + 1
    while True:
        path = parent / f"{algo}_{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took it meanwhile
            n += 1


def write_text(path: Path, text: str) -> Path:
    return atomic(path, lambda p: p.write_text(text))


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def write_yaml(path: Path, data: Any) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_model(model: Any, path: Path) -> Path:
    return atomic(path, lambda p: model.save(str(p)))


def save_vecnormalize(vec_normalize: Any, path: Path) -> Path:
    return atomic(path, lambda p: vec_normalize.save(str(p)))


def save_checkpoint(model: Any, run_dir: Path, save_replay_buffer: bool = False) -> Path:
    """``checkpoints/model_<N>_steps.zip`` (+ VecNormalize stats, + replay buffer). Stats first, model
    last: a checkpoint is complete once its model file exists."""
    from kai_drive.training.envs import find_vec_normalize

    ckpt = Path(run_dir) / "checkpoints"
    steps = int(model.num_timesteps)
    vn = find_vec_normalize(model.get_env()) if model.get_env() is not None else None
    if vn is not None:
        save_vecnormalize(vn, ckpt / f"vecnormalize_{steps}_steps.pkl")
    if save_replay_buffer and getattr(model, "replay_buffer", None) is not None:
        atomic(ckpt / "replay_buffer.pkl", lambda p: model.save_replay_buffer(str(p)))
        write_text(ckpt / "replay_buffer.txt", f"{steps}\n")
    return save_model(model, ckpt / f"model_{steps}_steps.zip")


def checkpoint_problem(model_zip: Path, vecnormalize: Path | None = None) -> str | None:
    """Why a checkpoint cannot be loaded (truncated or corrupt zip / pickle), or None when it reads.

    Reads the zip's members (CRC-checked) and unpickles the VecNormalize stats: these are files of this
    run, which ``--resume`` loads anyway."""
    import pickle
    import zipfile

    try:
        with zipfile.ZipFile(model_zip) as zf:
            names = set(zf.namelist())
            missing = {"data", "policy.pth"} - names
            if missing:
                return f"the zip lacks {sorted(missing)}"
            bad = zf.testzip()
            if bad is not None:
                return f"member {bad} fails its CRC check"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if vecnormalize is not None:
        try:
            with open(vecnormalize, "rb") as fh:
                pickle.load(fh)
        except Exception as exc:  # truncated pickle: EOFError, UnpicklingError, ...
            return f"{vecnormalize.name}: {type(exc).__name__}: {exc}"
    return None


def latest_readable_checkpoint(
    run_dir: Path, needs_vecnormalize: bool = False
) -> tuple[tuple[int, Path, Path | None] | None, list[tuple[int, Path, str]]]:
    """``(newest checkpoint that reads, [(steps, file, why) of newer ones that do not])``.

    ``needs_vecnormalize``: a checkpoint without its ``vecnormalize_<N>_steps.pkl`` counts as unreadable."""
    skipped: list[tuple[int, Path, str]] = []
    for steps, path, vn in all_checkpoints(run_dir)[::-1]:
        why = "its vecnormalize_<N>_steps.pkl is missing" if needs_vecnormalize and vn is None else None
        why = why or checkpoint_problem(path, vn)
        if why is None:
            return (steps, path, vn), skipped
        skipped.append((steps, path, why))
    return None, skipped


def all_checkpoints(run_dir: Path) -> list[tuple[int, Path, Path | None]]:
    """Every ``(steps, model.zip, vecnormalize.pkl or None)`` of a run, oldest first."""
    ckpt = Path(run_dir) / "checkpoints"
    if not ckpt.is_dir():
        return []
    found = sorted((int(m.group(1)), p) for p in ckpt.iterdir() if (m := CHECKPOINT_RE.match(p.name)))
    out = []
    for steps, path in found:
        vn = ckpt / f"vecnormalize_{steps}_steps.pkl"
        out.append((steps, path, vn if vn.is_file() else None))
    return out


def latest_checkpoint(run_dir: Path) -> tuple[int, Path, Path | None] | None:
    """``(steps, model.zip, vecnormalize.pkl or None)`` of the newest checkpoint, or None."""
    found = all_checkpoints(run_dir)
    return found[-1] if found else None


def venv_renderer(venv: Any) -> tuple[str, bool]:
    """``(renderer, sees_pixels)`` of a VecEnv: the renderer its envs resolved ("tiny", "egl", "opengl") and
    whether their observations contain images (else the renderer cannot matter to the agent)."""
    renderer = str(venv.get_attr("renderer", indices=[0])[0])
    keys = getattr(venv.get_attr("observation_space", indices=[0])[0], "spaces", {})
    return renderer, any(k in keys for k in IMAGE_KEYS)


def run_renderer(config: dict) -> str:
    """The renderer that made a run's training images (config.yaml's ``renderer``; runs made before the key
    existed saw TinyRenderer images only, so "tiny")."""
    from kai_drive.perception.weights import LEGACY_RENDERER

    return str((config or {}).get("renderer") or LEGACY_RENDERER)


def check_run_renderer(config: dict, env_id: str, env_config: dict, what: str) -> str:
    """Build one env of ``env_id`` with ``env_config`` and warn (``RendererMismatchWarning``, naming both)
    when it renders with another renderer than the run trained with and its observations hold images.
    Returns the run's training renderer."""
    import gymnasium

    import kai_drive  # noqa: F401  (registers the envs)
    from kai_drive.perception.weights import warn_renderer_mismatch

    trained = run_renderer(config)
    env = gymnasium.make(env_id, config=dict(env_config))
    try:
        current = str(env.unwrapped.renderer)
        keys = getattr(env.observation_space, "spaces", {})
    finally:
        env.close()
    if any(k in keys for k in IMAGE_KEYS):
        warn_renderer_mismatch(trained, current, what)
    return trained

