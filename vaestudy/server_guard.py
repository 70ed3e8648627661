"""Run a command tied to the life of the process that started it: `python -m
vaestudy.server_guard CMD ...`.

The guard leads its own process group (its starter gives it a new session) and runs CMD in it.
When the starter dies, even by SIGKILL, Linux sends the guard SIGTERM (`PR_SET_PDEATHSIG`); on
that, SIGINT or SIGHUP it stops the whole group: CMD and whatever CMD started (`mlflow server`
starts uvicorn workers). `vaestudy.stores.serve` runs the local tracking server under it, so a
killed study or UI leaves no server holding the store. Elsewhere than Linux only the signals
stop it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_WAIT_S = 15.0  # the group's grace after SIGTERM before SIGKILL


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    starter = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    if os.getppid() != starter:  # the starter died before the death signal was armed
        return 128 + signal.SIGTERM
    child = subprocess.Popen(argv)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)  # CMD and its children; the guard ignores it
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_WAIT_S)
        if child.poll() is None:  # deaf to SIGTERM: the whole group, the guard last
            os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
