"""Atomic file writes, shared by every floor. (Run folders, weights, pretraining checkpoints and data
sets all write through :func:`atomic`, so a crash or a full disk never leaves a half-written file
behind.) Reading YAML lives in :mod:`kai_drive.config`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


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
