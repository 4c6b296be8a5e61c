"""``python -m kai_drive.distributed.launcher PARENT_PID -- <train args>``: ``kai_drive.train`` that stops
cleanly when the Ray worker that started it dies.

A Ray trial can end without running any of its code (its worker or node is killed, ASHA stops it, the
sweep is interrupted). A daemon thread here watches the parent process; once it is gone the training
gets SIGTERM -- which ``kai_drive.train`` turns into "save a checkpoint, exit 130" -- and, if it is still
alive ``GRACE_S`` later, is killed. The run folder is then resumable by the retried trial.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

GRACE_S = 60.0


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            break
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(137)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m kai_drive.distributed.launcher PARENT_PID -- <kai_drive.train args>", file=sys.stderr)
        return 2
    threading.Thread(target=_watch, args=(int(argv[0]),), daemon=True).start()
    from kai_drive.train import main as train_main

    return train_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
