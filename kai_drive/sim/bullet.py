"""Where every kai_drive module gets PyBullet from, without its banner.

PyBullet prints "pybullet build time: ..." (C ``stderr``) when it is first imported and "argv[0]=" (C
``stdout``) when a client connects, in every process, subprocess workers included. Here the first
import runs with file descriptors 1 and 2 captured, and :func:`connect` with descriptor 1 captured;
everything captured except those two banner lines is written back afterwards, so no real message is
lost (only delayed until the call returns), and exceptions propagate unchanged. Nothing else is
captured: the EGL plugin's messages, warnings and errors reach the terminal as they are.

    from kai_drive.sim.bullet import pybullet, connect
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import threading
from collections.abc import Iterator

__all__ = ["BulletClient", "connect", "pybullet"]

#: the lines PyBullet prints on its own (dropped); anything else captured is written back
BANNER = (b"pybullet build time:", b"argv[0]=")
_LOCK = threading.Lock()


def _c_library():
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):  # no C library by that name (e.g. Windows): nothing to flush there
        return None


_LIBC = _c_library()


def _flush_c_streams() -> None:
    """Flush the C library's stdio buffers (a banner printed to a pipe would otherwise be written at exit)."""
    if _LIBC is not None and hasattr(_LIBC, "fflush"):
        _LIBC.fflush(None)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


@contextlib.contextmanager
def without_banner(fds: tuple[int, ...]) -> Iterator[None]:
    """Capture the file descriptors ``fds`` (1 = stdout, 2 = stderr) at the C level for the duration;
    then write back everything captured except PyBullet's banner lines. A descriptor that is not open
    is left alone."""
    with _LOCK:
        for stream in (sys.stdout, sys.stderr):  # Python's buffers first: their text keeps its place
            if stream is not None:
                stream.flush()
        saved: dict[int, int] = {}
        for fd in fds:
            try:
                saved[fd] = os.dup(fd)
            except OSError:
                continue
        captured = {fd: tempfile.TemporaryFile() for fd in saved}
        try:
            for fd, tmp in captured.items():
                os.dup2(tmp.fileno(), fd)
            yield
        finally:
            _flush_c_streams()
            for fd, tmp in captured.items():
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                tmp.seek(0)
                lines = tmp.read().splitlines(keepends=True)
                tmp.close()
                _write_all(fd, b"".join(line for line in lines if not line.lstrip().startswith(BANNER)))


with without_banner((1, 2)):
    import pybullet
    from pybullet_utils.bullet_client import BulletClient


def connect(gui: bool = False) -> BulletClient:
    """A new PyBullet physics server (``GUI`` window or headless ``DIRECT``) behind its own client."""
    with without_banner((1,)):
        return BulletClient(connection_mode=pybullet.GUI if gui else pybullet.DIRECT)
