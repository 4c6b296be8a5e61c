"""Small file helpers shared by every floor: atomic writes and reading a YAML mapping with errors that
name the file. (Run folders, weights, pretraining checkpoints and data sets all write through
:func:`atomic`, so a crash or a full disk never leaves a half-written file behind.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import yaml


def atomic(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` then ``os.replace(tmp, path)``: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_yaml_mapping(path: str | Path, what: str = "") -> dict:
    """The mapping in the YAML file ``path`` (``safe_load``); ``ValueError`` naming the file (prefixed by
    ``what``, e.g. ``"--run runs/x: "``) when it is not valid YAML or not a mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{what}{path.name if what else path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}{path.name if what else path} is damaged (expected a mapping, got {type(data).__name__})")
    return data
