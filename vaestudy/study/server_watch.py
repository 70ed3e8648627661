"""End a study in bounded time when its tracking server stays silent.

Trials ride out a short outage: MLflow's client retries each request with backoff (about four
minutes by default), and a trial whose flush still fails keeps the unsent points, in memory and
in each Tune checkpoint it writes (`vaestudy.study.trial`), and trains on. A server that stays
down would otherwise hold the study for as long as its trials last. So, while `vaestudy run` runs,
`watching` asks the server for `/health` every `INTERVAL_S` (any answer counts, however slow:
a busy server is not a dead one); once it has not answered for `silence_s()` seconds
($VAESTUDY_TRACKING_SILENCE_S, default `DEFAULT_SILENCE_S`: longer than a local server's restart
by its guard, `vaestudy.tracking.server_guard`; a server that accepts connections but never answers
is found within twice that), it stops the study as Ctrl-C would
(`vaestudy.study.interrupts.stop`): Tune stops the trials within seconds and saves its state. The
driver, which cannot close runs without the server, then raises `TrackingLost`, and `vaestudy
run` exits 1 naming the server and printing the `--resume` command. Once the server answers
again, `--resume` closes what was left RUNNING, and each resumed trial sends the points its
checkpoint kept before it trains a step (MLflow stores a repeated point once); the steps after
that checkpoint are trained and logged again. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import time

from vaestudy.errors import ConfigError
from vaestudy.study import interrupts
from vaestudy.tracking.stores import answers, redacted

SILENCE_ENV = "VAESTUDY_TRACKING_SILENCE_S"
DEFAULT_SILENCE_S = 120.0
INTERVAL_S = 5.0
_lost: list[str] = []


class TrackingLost(Exception):
    """The tracking server stayed silent past `silence_s()`: the study stopped, runs unclosed."""


def silence_s() -> float:
    """How long the tracking server may stay silent before the study stops, in seconds."""
    text = os.environ.get(SILENCE_ENV, str(DEFAULT_SILENCE_S))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"${SILENCE_ENV}={text!r}: expected a number of seconds above 0")
    return value


def lost() -> bool:
    """Whether `watching` stopped the study because the tracking server fell silent."""
    return bool(_lost)


def watching(uri: str) -> contextlib.AbstractContextManager[None]:
    """While the block runs, stop the study (`interrupts.stop`) once the tracking server at
    `uri` has not answered for `silence_s()` seconds."""
    limit = silence_s()
    answered = [time.monotonic()]

    def check() -> str | None:
        if answers(uri, timeout=limit):  # a busy server may take long: it still answers
            answered[0] = time.monotonic()
            return None
        silent = time.monotonic() - answered[0]
        if silent < limit:
            return None
        _lost.append(uri)
        return (
            f"the tracking server at {redacted(uri)} has not answered for {silent:.0f} s "
            f"(${SILENCE_ENV}: {limit:.0f}); the trials kept what they could not send"
        )

    return interrupts.watching(check, min(INTERVAL_S, limit), "vaestudy-server-watch")
