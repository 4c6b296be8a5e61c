"""Where the YAML catalogues live, and the env ids and short aliases they define.

The catalogues are the top-level folders ``envs/``, ``agents/`` and ``configs/``. In a source checkout
(or an editable install) they are read from the repository; a wheel carries copies under
``kai_drive/_catalog/`` (see ``[tool.hatch.build.targets.wheel.force-include]`` in pyproject.toml).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

from kai_drive.config import SpecError, read_yaml
from kai_drive.tasks import REGISTRY

_PKG = Path(__file__).resolve().parent
KINDS = ("envs", "agents", "configs")


class UnknownEnvError(KeyError):
    """An env name that is neither a catalogue id nor an alias; the message suggests the closest."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def catalog_dir(kind: str) -> Path:
    """The folder holding the ``kind`` catalogue ("envs", "agents" or "configs")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    for candidate in (_PKG / "_catalog" / kind, _PKG.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"kai_drive cannot find its '{kind}/' catalogue (looked in {_PKG / '_catalog'} and {_PKG.parent}); "
        "reinstall the package"
    )


@functools.lru_cache(maxsize=None)
def env_catalog() -> dict[str, Path]:
    """Map of alias (the YAML file's stem, e.g. ``lane-keep``) -> path of the env's YAML."""
    return {p.stem: p for p in sorted(catalog_dir("envs").glob("*.yaml"))}


@functools.lru_cache(maxsize=None)
def env_ids() -> dict[str, str]:
    """Map of full gymnasium id (``KaiDrive/LaneKeep-v0``) -> alias (``lane-keep``)."""
    out: dict[str, str] = {}
    for alias, path in env_catalog().items():
        data = read_yaml(path)
        env_id = data.get("id")
        if not isinstance(env_id, str):
            raise SpecError(f"{path}: id: missing (every env YAML needs an id like KaiDrive/Name-v0)")
        if env_id in out:
            raise SpecError(f"{path}: id: {env_id} is also defined by envs/{out[env_id]}.yaml")
        out[env_id] = alias
    return out


def resolve_env(name: str) -> tuple[str, str]:
    """Accept an alias (``lane-keep``), a full id (``KaiDrive/LaneKeep-v0``) or ``kai_drive:<id>``.

    Returns ``(full_id, alias)``; an unknown name raises :class:`UnknownEnvError` with a suggestion.
    """
    ids = env_ids()
    bare = name.split(":", 1)[1] if name.startswith("kai_drive:") else name
    if bare in ids:
        return bare, ids[bare]
    aliases = {alias: env_id for env_id, alias in ids.items()}
    if bare in aliases:
        return aliases[bare], bare
    choices = sorted(aliases) + sorted(ids)
    close = difflib.get_close_matches(bare, choices, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(f"{a} ({i})" for a, i in sorted(aliases.items()))
    raise UnknownEnvError(f"unknown env '{name}'.{hint} Known envs: {listing}")


def env_yaml(name: str) -> Path:
    """Path of the YAML defining env ``name`` (alias or id)."""
    return env_catalog()[resolve_env(name)[1]]


def task_family(name: str) -> str:
    """The task family (``kai_drive.tasks.FAMILIES``: "driving" or "grasp") of env ``name`` (alias or id).

    Read from the env YAML's ``task.kind`` and the task class's ``family``: the upper floors (metrics,
    experts, evaluation) dispatch on this, never on the env's name."""
    kind = (read_yaml(env_yaml(name)).get("task") or {}).get("kind", "lane_keep")
    if kind not in REGISTRY:
        raise SpecError(f"{env_yaml(name)}: task.kind: unknown task kind {kind!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[kind].task_cls.family
