"""Run a server tied to the life of the process that started it, and restart it if it dies:
`python -m vaestudy.tracking.server_guard CMD ...`.

The guard leads its own process group (its starter gives it a new session) and runs CMD in it.

- When the starter dies, even by SIGKILL, Linux sends the guard SIGTERM (`PR_SET_PDEATHSIG`); on
  that, SIGINT or SIGHUP it stops the whole group: CMD and whatever CMD started (`mlflow server`
  starts uvicorn workers). So a killed study or UI leaves no server holding the store.
- When CMD dies on its own (killed, crashed) after serving for `SERVED_S`, the guard stops what
  is left of it (an orphaned worker would hold the port) and starts it again, on the same
  arguments (the same store and port), up to `MAX_RESTARTS` times; a start that fails sooner is
  retried once (a transient failure, e.g. two servers creating one new store's schema), then
  the guard exits with CMD's status. Each restart is written to the guard's stderr (the
  server's log). Clients that retry (MLflow's do, and a trial keeps unsent metrics until its
  next flush: `vaestudy.tracking.runs`) carry on.

`vaestudy.tracking.stores.serve` runs the local tracking server under it. Elsewhere than Linux only
the signals stop it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time

from vaestudy.tracking.processes import group_members, kill

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_WAIT_S = 15.0  # the group's grace after SIGTERM before SIGKILL
SERVED_S = 30.0  # a run at least this long counts as having served: restart it
MAX_RESTARTS = 5


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_group(child: subprocess.Popen) -> None:
    """SIGTERM the guard's group but the guard (CMD and its children), then SIGKILL what
    ignores it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(0, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=STOP_WAIT_S)
        if child.poll() is None:  # deaf to SIGTERM: the whole group, the guard last
            os.killpg(0, signal.SIGKILL)
    finally:
        signal.signal(signal.SIGTERM, _stop)


def main(argv: list[str]) -> int:
    starter = os.getppid()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    if os.getppid() != starter:  # the starter died before the death signal was armed
        return 128 + signal.SIGTERM
    restarts, quick_retries = 0, 1
    child = subprocess.Popen(argv)
    try:
        while True:
            started = time.monotonic()
            status = child.wait()
            ran = time.monotonic() - started
            if ran >= SERVED_S and restarts < MAX_RESTARTS:
                restarts += 1
            elif ran < SERVED_S and quick_retries:
                quick_retries -= 1
            else:
                return status
            print(
                f"vaestudy.tracking.server_guard: {' '.join(argv[:4])} ... exited ({status}) after "
                f"{ran:.0f} s; starting it again",
                file=sys.stderr,
                flush=True,
            )
            _kill_leftovers()  # an orphaned worker would hold the port
            child = subprocess.Popen(argv)
    finally:
        _stop_group(child)


def _kill_leftovers() -> None:
    """SIGKILL every other process of the guard's group (what is left of a dead CMD)."""
    kill(group_members(os.getpgrp()) - {os.getpid()})
    time.sleep(0.5)  # the kernel frees their sockets


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
