"""Configuration plumbing shared by every spec and recipe: one strict pydantic base model, the error
type whose message names the source and the dotted key, YAML reading, merging and dotted keys.

Every YAML of the project (env catalogue, agent recipes, evaluation suites, run folders) is read with
``yaml.safe_load``; nothing is ``eval()``'d.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "SpecError", "StrictModel", "deep_merge", "dotted_to_nested", "format_validation_error", "read_yaml", "set_dotted",
    "read_yaml_mapping",
]


class SpecError(ValueError):
    """A spec file or an override is invalid; the message names the source and the key."""


class StrictModel(BaseModel):
    """Base of every spec, recipe and suite model: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")


class FrozenModel(StrictModel):
    """A :class:`StrictModel` whose instances are immutable: the env specs (an env is a pure function of
    its spec, seed and options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, everything else, lists
    included, replaces). Neither argument is modified and the result shares nothing with them."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(rec: Any, path: str, value: Any) -> None:
    """Set ``a.b.c`` of a nested record in place (``a.0.c``: item 0 of a list; missing or None dicts on the way
    are created)."""
    keys = path.split(".")
    cur: Any = rec
    for k in keys[:-1]:
        if isinstance(cur, list):
            cur = cur[int(k)]
        else:
            if cur.get(k) is None:
                cur[k] = {}
            cur = cur[k]
    last = keys[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value


def dotted_to_nested(pairs: Mapping[str, Any]) -> dict[str, Any]:
    """``{"sensors.camera.width": 96}`` -> ``{"sensors": {"camera": {"width": 96}}}``."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        set_dotted(out, key, copy.deepcopy(value))  # the result shares nothing with ``pairs``
    return out


def format_validation_error(source: str, err: ValidationError,
                            unknown_hint: str = "see envs/*.yaml for the valid keys") -> str:
    """One line per error: ``source: dotted.key: message`` (an unknown key says so, with ``unknown_hint``)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key (check the spelling; {unknown_hint})"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a spec YAML (an empty file is ``{}``); :class:`SpecError` naming the file when it
    is not valid YAML or not a mapping."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_yaml_mapping(path: str | Path, what: str = "") -> dict:
    """The mapping in the YAML file ``path`` written by the project (a run's config.yaml); ``ValueError``
    naming the file (prefixed by ``what``, e.g. ``"--run runs/x: "``) when it is not valid YAML or not a
    mapping (an empty file is damaged too)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{what}{path.name if what else path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}{path.name if what else path} is damaged (expected a mapping, got {type(data).__name__})")
    return data
