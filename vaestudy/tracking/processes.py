"""Processes on this machine, read from Linux's /proc (nothing is found elsewhere): who descends
from whom, and who shares a process group, so that what a failed start or a dead server left
behind can be stopped."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path


def _live() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live (not zombie) process."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                yield int(stat.parent.name), int(fields[1]), int(fields[2])


def descendants(pid: int | None = None) -> set[int]:
    """The live processes below `pid` (default: this one): children, their children, ..."""
    parents = {p: parent for p, parent, _ in _live()}
    found: set[int] = set()
    frontier = {os.getpid() if pid is None else pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def group_members(group: int) -> set[int]:
    """The live processes of process group `group`."""
    return {p for p, _, g in _live() if g == group}


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` that are still live processes."""
    return pids & {p for p, _, _ in _live()}


def kill(pids: set[int]) -> None:
    """SIGKILL each of `pids` that still exists."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
