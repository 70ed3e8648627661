"""A local study in a network namespace of its own: nothing it listens on is reachable from
another machine.

A local study (Ray started here, the tracking store and the Optuna storage SQLite files, Ray
Tune's storage a local folder) needs no network beyond this machine, yet Ray 2.60 binds its gRPC
servers (GCS, raylet, workers) to every interface, and `ray.init` has no bind address. So on
Linux `vaestudy run` moves such a study, before it starts anything, into a new network namespace
whose one interface is loopback (`unshare(CLONE_NEWNET)`; for a user other than root inside a new
user namespace that maps the user to itself, so files keep their owner). Ray, the tracking
server and every trial then listen on 127.0.0.1 of that namespace only. Files, processes and
signals are shared with the rest of the machine as before; the study's loopback tracking server
is reachable from inside only, so watch a running local study with `vaestudy ui`, which opens
the store itself. Where the system forbids it (unprivileged user namespaces switched off, a
container's seccomp profile) `isolate` says why and the study runs as before. Standard library
only.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys

from vaestudy.tracking.stores import sqlite_file

CLONE_NEWNET = 0x40000000  # <linux/sched.h>
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1  # <linux/sockios.h>, <net/if.h>
RAY_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": ray_constants.ENABLE_RAY_CLUSTER


def local_study(tracking: str, optuna: str, tune: str, ray: str | None) -> bool:
    """Whether a study needs nothing beyond this machine: its tracking store and Optuna
    storage (`vaestudy.tracking.stores` URLs) are SQLite files, Tune's storage is a local path and
    Ray starts here (`ray` None)."""
    files = (sqlite_file(tracking), sqlite_file(optuna))
    return ray is None and None not in files and "://" not in tune


def isolate() -> str | None:
    """Move this process, and everything it starts from now on, into a new network namespace
    with loopback up. None when done, else why it could not be (nothing changed then)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux's"
    if len(os.listdir("/proc/self/task")) > 1:
        return "the process already runs threads"  # a namespace is per thread
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWNET | CLONE_NEWUSER
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        return f"unshare: {os.strerror(ctypes.get_errno())}"
    if flags & CLONE_NEWUSER:  # stay this user inside, so files keep their owner
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a new namespace's lo is down
        request = struct.pack("16sH14s", b"lo", 0, bytes(14))
        up = struct.unpack("16sH14s", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1] | IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", up, bytes(14)))
    # Ray's single-machine mode: its node is 127.0.0.1, without probing for a route out (which
    # fails here, with a warning on the console). Read when `ray` is first imported.
    os.environ.setdefault(RAY_SINGLE_MACHINE, "0")
    return None
