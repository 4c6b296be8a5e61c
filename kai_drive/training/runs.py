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

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import yaml

from kai_drive.config import read_yaml_mapping
from kai_drive.files import atomic, read_json, write_json, write_text  # noqa: F401  (re-exported)
from kai_drive.training.recipe import env_config_for

CHECKPOINT_RE = re.compile(r"^model_(\d+)_steps\.zip$")
#: observation keys made by the renderer (a policy that sees none of them does not care which renderer)
IMAGE_KEYS = ("camera", "depth", "segmentation")


def write_yaml(path: Path, data: Any) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110))


def save_model(model: Any, path: Path) -> Path:
    return atomic(path, lambda p: model.save(str(p)))


def save_vecnormalize(vec_normalize: Any, path: Path) -> Path:
    return atomic(path, lambda p: vec_normalize.save(str(p)))


def checkpoint_problem(model_zip: Path, vecnormalize: Path | None = None) -> str | None:
    """Why a checkpoint cannot be loaded (truncated or corrupt zip / pickle), or None when it reads.

    Reads the zip's members (CRC-checked) and unpickles the VecNormalize stats: these are files of this
    run, which ``--resume`` loads anyway."""
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


class RunFolder:
    """One run folder: the only code that knows its layout (module docstring). The trainer writes it through
    this class; play, evaluate (``load_run``), ``--resume``, sweep trials and the perception ablation (kai_drive.experiments) read it.

    ``RunFolder(path)`` wraps an existing folder (nothing is checked or created); :meth:`create` makes the
    next ``<log_folder>/<alias>/<algo>_<n>``. Every write is atomic (:func:`kai_drive.files.atomic`)."""

    CONFIG = "config.yaml"
    COMMAND = "command.txt"
    STATUS = "status.json"
    FINAL_EVAL = "final_eval.json"
    EVALUATIONS = "evaluations.json"
    EVALUATIONS_NPZ = "evaluations.npz"
    IMITATION = "imitation.json"
    CHECKPOINTS = "checkpoints"
    TB = "tb"
    VIDEOS = "videos"
    #: ``--which`` / ``checkpoint`` name -> model file; the VecNormalize stats beside each: :meth:`stats_beside`
    MODELS = {"final": "final_model.zip", "best": "best_model.zip"}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- finding and creating ----------------------------------------------------------------------
    @classmethod
    def create(cls, log_folder: str | Path, alias: str, algo: str) -> "RunFolder":
        """Create ``log_folder/alias/algo_<n>`` with the next free ``n`` (starting at 1)."""
        parent = Path(log_folder) / alias
        parent.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(rf"^{re.escape(algo)}_(\d+)$")
        taken = [int(m.group(1)) for p in parent.iterdir() if (m := pattern.match(p.name))]
        n = max(taken, default=0) + 1
        while True:
            path = parent / f"{algo}_{n}"
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:  # another run took it meanwhile
                n += 1

    @classmethod
    def all_in(cls, log_folder: str | Path, algo: str, alias: str = "*") -> list["RunFolder"]:
        """Every ``<log_folder>/<alias>/<algo>_<n>`` that has a config.yaml, oldest (smallest ``n``) first."""
        pattern = re.compile(rf"^{re.escape(algo)}_(\d+)$")
        found = [(int(m.group(1)), p) for p in Path(log_folder).glob(f"{alias}/{algo}_*")
                 if (m := pattern.match(p.name)) and (p / cls.CONFIG).is_file()]
        return [cls(p) for _, p in sorted(found)]

    @classmethod
    def newest(cls, log_folder: str | Path, algo: str, alias: str = "*") -> "RunFolder | None":
        """The newest run of :meth:`all_in`, or None."""
        found = cls.all_in(log_folder, algo, alias)
        return found[-1] if found else None

    @classmethod
    def of_model(cls, model: str | Path) -> "RunFolder":
        """The run folder a model file lies in (``checkpoints/`` files belong to the folder above)."""
        folder = Path(model).parent
        return cls(folder.parent if folder.name == cls.CHECKPOINTS else folder)

    # -- layout --------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def replay_buffer_file(self) -> Path:
        return self.checkpoints_dir / "replay_buffer.pkl"

    def model_file(self, which: str) -> Path:
        """``final_model.zip`` or ``best_model.zip`` (``which``: final | best)."""
        if which not in self.MODELS:
            raise ValueError(f"checkpoint must be 'final' or 'best', got {which!r}")
        return self.path / self.MODELS[which]

    def stats_file(self, which: str) -> Path:
        """The VecNormalize stats of ``final`` or ``best`` (they may not exist)."""
        return self.stats_beside(self.model_file(which))

    @staticmethod
    def stats_beside(model: str | Path) -> Path:
        """The naming rule of VecNormalize stats: ``best_model.zip`` -> ``best_model_vecnormalize.pkl``,
        ``checkpoints/model_<N>_steps.zip`` -> ``checkpoints/vecnormalize_<N>_steps.pkl``, any other model
        (``final_model.zip``, a user's .zip) -> ``vecnormalize.pkl`` in its folder."""
        model = Path(model)
        if model.stem == "best_model":
            return model.with_name("best_model_vecnormalize.pkl")
        if model.stem.startswith("model_") and model.stem.endswith("_steps"):
            return model.with_name(model.name.replace("model_", "vecnormalize_").replace(".zip", ".pkl"))
        return model.with_name("vecnormalize.pkl")

    def checkpoint_file(self, steps: int) -> Path:
        return self.checkpoints_dir / f"model_{int(steps)}_steps.zip"

    # -- reading -------------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds a config.yaml (a run made by kai_drive.train)."""
        return self.config_file.is_file()

    def config(self, what: str = "") -> dict:
        """config.yaml; ``ValueError`` (prefixed by ``what``) when damaged, FileNotFoundError when absent."""
        return read_yaml_mapping(self.config_file, what)

    def env_config(self, role: str = "test", config: dict | None = None) -> dict[str, Any]:
        """The env config (dotted keys) of ``role`` (train | eval | test) from the run's recipe."""
        cfg = self.config() if config is None else config
        return env_config_for(cfg.get("recipe") or {}, role)

    def status(self) -> dict:
        """status.json (``{}`` while the run has not saved yet)."""
        return self._json(self.STATUS, {}) or {}

    def final_eval(self) -> dict | None:
        """final_eval.json, or None."""
        return self._json(self.FINAL_EVAL)

    def evaluations(self) -> list[dict]:
        """The periodic evaluations so far (evaluations.json), oldest first."""
        return self._json(self.EVALUATIONS, []) or []

    def _json(self, name: str, default: Any = None) -> Any:
        return read_json(self.path / name, default, corrupt_ok=True)

    def final_eval_done(self, config: dict | None = None) -> bool:
        """Whether the final evaluation the recipe asks for (``eval.final_episodes``) has been written."""
        cfg = self.config() if config is None else config
        wanted = int(cfg.get("recipe", {}).get("eval", {}).get("final_episodes", 0))
        return wanted == 0 or (self.path / self.FINAL_EVAL).is_file()

    def best_or_final(self) -> tuple[str, Path, Path]:
        """``(name, model, stats)`` of best_model.zip when it exists, else of final_model.zip."""
        which = "best" if self.model_file("best").is_file() else "final"
        return self.MODELS[which], self.model_file(which), self.stats_file(which)

    def checkpoints(self) -> list[tuple[int, Path, Path | None]]:
        """Every ``(steps, model.zip, vecnormalize.pkl or None)`` of the run, oldest first."""
        ckpt = self.checkpoints_dir
        if not ckpt.is_dir():
            return []
        found = sorted((int(m.group(1)), p) for p in ckpt.iterdir() if (m := CHECKPOINT_RE.match(p.name)))
        out = []
        for steps, path in found:
            vn = self.stats_beside(path)
            out.append((steps, path, vn if vn.is_file() else None))
        return out

    def latest_checkpoint(self) -> tuple[int, Path, Path | None] | None:
        """``(steps, model.zip, vecnormalize.pkl or None)`` of the newest checkpoint, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def latest_readable_checkpoint(
        self, needs_vecnormalize: bool = False
    ) -> tuple[tuple[int, Path, Path | None] | None, list[tuple[int, Path, str]]]:
        """``(newest checkpoint that reads, [(steps, file, why) of newer ones that do not])``.

        ``needs_vecnormalize``: a checkpoint without its ``vecnormalize_<N>_steps.pkl`` counts as unreadable."""
        skipped: list[tuple[int, Path, str]] = []
        for steps, path, vn in self.checkpoints()[::-1]:
            why = "its vecnormalize_<N>_steps.pkl is missing" if needs_vecnormalize and vn is None else None
            why = why or checkpoint_problem(path, vn)
            if why is None:
                return (steps, path, vn), skipped
            skipped.append((steps, path, why))
        return None, skipped

    # -- writing -------------------------------------------------------------------------------------
    def write_config(self, config: dict) -> Path:
        return write_yaml(self.config_file, config)

    def write_command(self, text: str, append: bool = False) -> Path:
        """command.txt: ``text`` (a new run) or the old content + ``text`` (``append``, a resume)."""
        path = self.path / self.COMMAND
        old = path.read_text() if append and path.is_file() else ""
        return write_text(path, old + text)

    def write_status(self, status: dict) -> Path:
        return write_json(self.path / self.STATUS, status)

    def write_final_eval(self, result: dict) -> Path:
        return write_json(self.path / self.FINAL_EVAL, result)

    def write_imitation(self, record: dict) -> Path:
        return write_json(self.path / self.IMITATION, record)

    def save(self, which: str, model: Any, vec_normalize: Any = None) -> Path:
        """``final_model.zip`` / ``best_model.zip`` (+ its VecNormalize stats when ``vec_normalize``)."""
        path = save_model(model, self.model_file(which))
        if vec_normalize is not None:
            save_vecnormalize(vec_normalize, self.stats_file(which))
        return path

    def save_checkpoint(self, model: Any, save_replay_buffer: bool = False) -> Path:
        """``checkpoints/model_<N>_steps.zip`` (+ VecNormalize stats, + replay buffer). Stats first, model
        last: a checkpoint is complete once its model file exists."""
        from kai_drive.training.envs import find_vec_normalize  # light module: sweep trials read runs without torch

        model_file = self.checkpoint_file(model.num_timesteps)
        vn = find_vec_normalize(model.get_env()) if model.get_env() is not None else None
        if vn is not None:
            save_vecnormalize(vn, self.stats_beside(model_file))
        if save_replay_buffer and getattr(model, "replay_buffer", None) is not None:
            atomic(self.replay_buffer_file, lambda p: model.save_replay_buffer(str(p)))
            write_text(self.checkpoints_dir / "replay_buffer.txt", f"{int(model.num_timesteps)}\n")
        return save_model(model, model_file)


def save_checkpoint(model: Any, run_dir: Path, save_replay_buffer: bool = False) -> Path:
    """:meth:`RunFolder.save_checkpoint` of the folder ``run_dir``."""
    return RunFolder(run_dir).save_checkpoint(model, save_replay_buffer)


def venv_renderer(venv: Any) -> tuple[str, bool]:
    """``(renderer, sees_pixels)`` of a VecEnv: the renderer its envs resolved ("tiny", "egl", "opengl") and
    whether their observations contain images (else the renderer cannot matter to the agent)."""
    renderer = str(venv.get_attr("renderer", indices=[0])[0])
    keys = getattr(venv.get_attr("observation_space", indices=[0])[0], "spaces", {})
    return renderer, any(k in keys for k in IMAGE_KEYS)


def run_renderer(config: dict) -> str:
    """The renderer that made a run's training images (config.yaml's ``renderer``; runs made before the key
    existed saw TinyRenderer images only, so "tiny")."""
    from kai_drive.perception.weights import LEGACY_RENDERER  # torch: not for the readers in sweep trials

    return str((config or {}).get("renderer") or LEGACY_RENDERER)


def check_run_renderer(config: dict, env_id: str, env_config: dict, what: str) -> str:
    """Build one env of ``env_id`` with ``env_config`` and warn (``RendererMismatchWarning``, naming both)
    when it renders with another renderer than the run trained with and its observations hold images.
    Returns the run's training renderer."""
    import gymnasium

    import kai_drive  # noqa: F401  (registers the envs)
    from kai_drive.perception.weights import warn_renderer_mismatch  # torch: not for sweep trials' readers

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

