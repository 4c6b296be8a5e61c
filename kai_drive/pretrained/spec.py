"""The JSON spec of a shipped agent (``kai_drive/pretrained/agents/<name>.json``) and where the files are.

An agent is two files: ``<name>.pt`` (a torch ``state_dict``, read with ``torch.load(weights_only=True)``) and
``<name>.json`` (:class:`AgentSpec`): the env and the env config it was evaluated with, the observation spec and
the sensor settings it was trained on, the renderer, the shared encoder it sits on (id + sha256 of the shipped
file), the action space, the observation-normalisation statistics as numbers, the policy architecture, the
training command and recipe, and the run's final evaluation. This module reads and writes the spec (plain JSON,
validated by pydantic); it imports neither torch nor SB3.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from kai_drive.config import StrictModel

AGENTS_DIR = Path(__file__).resolve().parent / "agents"
FORMAT = "kai-drive-agent/1"
#: sensor settings that do not change what the policy was trained to see (evaluation conditions vary them)
SENSOR_CONDITIONS = ("noise_std", "dropout")


class AgentError(ValueError):
    """A shipped agent is unknown, or its files are damaged or do not belong together."""


class Bound(StrictModel):
    """A Box: shape, dtype and bounds (a number when uniform, else a flat list; +-inf as strings)."""

    shape: list[int]
    dtype: str
    low: float | str | list[float | str]
    high: float | str | list[float | str]


class EncoderRef(StrictModel):
    """The frozen shared encoder (kai_drive/perception/weights/<id>.pt) in front of the heads: its weights
    are not in the agent's .pt; the sha256 pins the exact file."""

    id: str
    file: str
    sha256: str


class Normalisation(StrictModel):
    """VecNormalize statistics as numbers. ``obs``: per observation key ``{"mean": [...], "var": [...]}``
    (None when the run did not normalise observations); ``reward``: the return statistics (fine-tuning)."""

    norm_obs: bool
    norm_reward: bool
    clip_obs: float
    clip_reward: float
    epsilon: float
    gamma: float
    obs: dict[str, dict[str, Any]] | None = None
    reward: dict[str, float] | None = None


class PolicyArch(StrictModel):
    """The SB3 policy: ``algo`` (ppo, sac, ...), ``policy`` (alias such as MultiInputPolicy) and its
    ``policy_kwargs`` in recipe form (class names as strings, see kai_drive.training.algos)."""

    algo: str
    policy: str
    policy_kwargs: dict[str, Any]
    frame_stack: int = 1
    observation_space: dict[str, Bound]


class Training(StrictModel):
    command: str
    run: str
    checkpoint: Literal["best", "final"]
    selection: str
    seed: int
    timesteps: int
    train_wall_time_s: float | None = None
    imitation_wall_time_s: float | None = None
    kai_drive_version: str
    note: str = ""
    recipe: dict[str, Any]


class WeightsRef(StrictModel):
    file: str
    sha256: str
    bytes: int


class AgentSpec(StrictModel):
    """Everything needed to rebuild and check a shipped agent (see the module docstring)."""

    format: Literal["kai-drive-agent/1"] = FORMAT
    name: str
    env_id: str
    alias: str
    envs: list[str] = Field(default_factory=list, description="every env the agent drives (a recipe's env_mix: the "
                            "generalist); [] = env_id alone")
    family: str
    env_config: dict[str, Any]
    renderer: str
    observation_spec: dict[str, Bound]
    sensors: dict[str, Any]
    action_space: Bound
    encoder: EncoderRef | None
    normalisation: Normalisation | None
    policy: PolicyArch
    training: Training
    evaluation: dict[str, Any]
    weights: WeightsRef
    exported: dict[str, str]


# -- spaces <-> JSON ----------------------------------------------------------------------------------
def _num(x: float) -> float | str:
    x = float(x)
    return ("inf" if x > 0 else "-inf") if math.isinf(x) else x


def bound_of(box: Any) -> Bound:
    """A gymnasium Box as a :class:`Bound`."""
    import numpy as np

    def one(a: Any) -> float | str | list:
        a = np.asarray(a, dtype=np.float64).ravel()
        return _num(a[0]) if a.size and np.all(a == a[0]) else [_num(v) for v in a]

    return Bound(shape=[int(s) for s in box.shape], dtype=str(np.dtype(box.dtype)), low=one(box.low), high=one(box.high))


def box_of(b: Bound) -> Any:
    """The gymnasium Box of a :class:`Bound`."""
    import numpy as np
    from gymnasium import spaces

    def arr(v: Any) -> Any:
        vals = [float(x) for x in v] if isinstance(v, list) else float(v)
        return np.broadcast_to(np.asarray(vals, dtype=np.float64), tuple(b.shape)).astype(b.dtype)

    return spaces.Box(arr(b.low), arr(b.high), tuple(b.shape), np.dtype(b.dtype))


def dict_space_of(bounds: dict[str, Bound]) -> Any:
    from gymnasium import spaces

    return spaces.Dict({k: box_of(v) for k, v in bounds.items()})


# -- files --------------------------------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def available() -> list[str]:
    """Names of the agents shipped in the package (a ``.json`` with its ``.pt``)."""
    return sorted(p.stem for p in AGENTS_DIR.glob("*.json") if p.with_suffix(".pt").is_file())


def agent_paths(name: str | Path) -> tuple[Path, Path]:
    """``(weights.pt, spec.json)`` of a shipped name, or of a path to an agent's .json / .pt."""
    if isinstance(name, str) and (AGENTS_DIR / f"{name}.json").is_file():
        spec = AGENTS_DIR / f"{name}.json"
    else:
        p = Path(name)
        spec = p.with_suffix(".json")
        if not (p.suffix in (".json", ".pt") and spec.is_file()):
            raise AgentError(f"no pretrained agent {str(name)!r}: shipped agents are {available()} "
                             f"(kai_drive.pretrained.available()); or pass the path of an exported <name>.json")
    weights = spec.with_suffix(".pt")
    if not weights.is_file():
        raise AgentError(f"{spec}: its weights {weights.name} are missing; {restore_hint(spec)}")
    return weights, spec


def restore_hint(path: Path) -> str:
    if Path(path).resolve().parent == AGENTS_DIR:
        return ("these are shipped files: restore them with `git checkout kai_drive/pretrained/agents/` in a source "
                "checkout, or reinstall the package (pip install --force-reinstall --no-deps kai-drive)")
    return "re-export it with python -m kai_drive.pretrained export --run RUN_DIR --name NAME"


def read_spec(name: str | Path) -> AgentSpec:
    """The validated spec of an agent; :class:`AgentError` naming the file when it is damaged."""
    _, path = agent_paths(name)
    try:
        return AgentSpec.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AgentError(f"{path}: not valid JSON ({exc}); {restore_hint(path)}") from None
    except ValidationError as exc:
        raise AgentError(f"{path}: not a valid agent spec ({exc.error_count()} problem(s): "
                         f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); {restore_hint(path)}") from None


def default_name(env: str) -> str:
    """The shipped agent of an env: its alias (``KaiDrive/LaneKeep-v0`` -> ``lane-keep``)."""
    from kai_drive.catalog import resolve_env

    return resolve_env(env)[1]
