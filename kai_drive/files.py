"""Atomic file writes and JSON reading, shared by every floor. (Run folders, weights, pretraining checkpoints
and data sets all write through :func:`atomic`, so a crash or a full disk never leaves a half-written file
behind.) Reading YAML lives in :mod:`kai_drive.config`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


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


def write_text(path: str | Path, text: str) -> Path:
    return atomic(path, lambda p: p.write_text(text))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, data: Any) -> Path:
    """Indented JSON (numpy / torch values as numbers and lists, paths as strings), written atomically."""
    return write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def read_json(path: str | Path, default: Any = None, corrupt_ok: bool = False) -> Any:
    """The file's JSON, ``default`` when it does not exist (``corrupt_ok``: also when it is not valid JSON, e.g.
    a file another process writes without :func:`atomic`)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return default
    except json.JSONDecodeError:
        if corrupt_ok:
            return default
        raise
