"""Processes on this machine (psutil: Linux, macOS, ...): who descends from whom, and who
shares a process group, so that what a failed start or a dead server left behind can be
stopped."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import psutil


def _live() -> Iterator[tuple[int, int, int]]:
    """(pid, parent pid, process group) of every live (not zombie) process."""
    for proc in psutil.process_iter(["pid", "ppid", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(OSError):  # gone since the listing
            yield info["pid"], info["ppid"], os.getpgid(info["pid"])


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
