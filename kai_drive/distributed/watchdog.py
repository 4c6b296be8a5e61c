"""A training that stops cleanly when the Ray worker that started it dies.

A Ray trial can end without running any of its code (its worker or node is killed, ASHA stops it, the
sweep is interrupted). The trial starts ``python -m kai_drive.train --watch-parent PID ...``; the daemon
thread of :func:`watch_parent` watches that parent process; once it is gone the training gets SIGTERM --
which ``kai_drive.train`` turns into "save a checkpoint, exit 130" -- and, if it is still alive ``GRACE_S``
later, is killed. The run folder is then resumable by the retried trial.
"""

from __future__ import annotations

import os
import signal
import threading
import time

GRACE_S = 60.0
#: the first train argument that names the process to watch (``--watch-parent PID``; not in --help)
FLAG = "--watch-parent"


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            break
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(137)


def watch_parent(parent_pid: int) -> None:
    """Start the daemon thread that stops this process (SIGTERM, then exit 137) once ``parent_pid`` is gone."""
    threading.Thread(target=_watch, args=(int(parent_pid),), daemon=True).start()


def strip_watch_flag(argv: list[str]) -> tuple[int | None, list[str]]:
    """``(parent pid or None, the other arguments)`` of a train command line that may start with
    ``--watch-parent PID``."""
    if len(argv) >= 2 and argv[0] == FLAG:
        return int(argv[1]), argv[2:]
    return None, argv
