"""How a study run stops on a signal: Ctrl-C (SIGINT), SIGTERM (timeout, Slurm, systemd,
Kubernetes) and SIGHUP (a closed terminal) all stop it the same way; so does `stop`, called
from any thread for a fault the run cannot outlive (a filling disk: `vaestudy.study.disk_watch`; a
silent tracking server: `vaestudy.study.server_watch`), which `watching` checks for from a thread.

While Ray Tune runs trials (`tune_running`), the first signal asks Tune for its graceful stop
(Tune's own handler, which it also installs on SIGUSR1): trials are checkpointed, the experiment
state saved, the runner closes the runs and prints the command that resumes. Outside Tune, or on
a second signal, it raises KeyboardInterrupt. The runner checks `requested` between its phases,
and `vaestudy run` exits with `exit_status`: 128 + the first signal's number (130, 143, 129);
after `stop`, `fault` says why (the run exits 1).
Ray installs its own SIGTERM handler (which aborts the driver) when it starts: call `install`
again after `ray.init`.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []
_faults: list[str] = []
_tune_running: list[bool] = [False]


def _handle(signum: int, frame: object) -> None:
    _received.append(signum)
    if len(_received) == 1 and _tune_running[0]:
        signal.raise_signal(signal.SIGUSR1)  # Tune's graceful stop
        return
    raise KeyboardInterrupt


def install() -> None:
    """Take the stop signals in this (main) thread; Tune then leaves SIGINT to us."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in SIGNALS:
        signal.signal(sig, _handle)


@contextlib.contextmanager
def tune_running() -> Iterator[None]:
    """Around `Tuner.fit()`: a stop signal then asks Tune to stop gracefully."""
    _tune_running[0] = True
    try:
        yield
    finally:
        _tune_running[0] = False


def stop(fault: str) -> None:
    """Stop the run from any thread because of `fault`, as a first stop signal would: Tune's
    graceful stop while trials run, else KeyboardInterrupt in the main thread."""
    _faults.append(fault)
    if _tune_running[0]:
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop
    else:
        _thread.interrupt_main()


def fault() -> str | None:
    """Why `stop` stopped the run, if it did."""
    return _faults[0] if _faults else None


def requested() -> bool:
    """Whether a stop signal or a fault arrived (the runner then starts nothing new)."""
    return bool(_received or _faults)


def exit_status(default: int) -> int:
    """128 + the first stop signal's number, or `default` if none arrived."""
    return 128 + _received[0] if _received else default


@contextlib.contextmanager
def watching(check: Callable[[], str | None], interval_s: float, name: str) -> Iterator[None]:
    """While the block runs, call `check` every `interval_s` seconds from a thread (`name`); the
    first fault it returns stops the run (`stop`), and the watch ends."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(interval_s):
            why = check()
            if why is not None:
                stop(why)
                return

    thread = threading.Thread(target=watch, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
