"""Stop a study while its disks still have room, rather than let a full one stop it badly.

A full filesystem under the tracking store, Ray Tune's storage, the study's log or Ray's
temporary folder fails a study in ways that waste it: the server answers "database or disk is
full", trials retry for minutes, logging floods the console. So `vaestudy run` refuses to start
when one of them has less than `MIN_FREE_MB` free (preflight: `low_space`), and while it runs
`watching` checks every `INTERVAL_S` and, when one drops under that, stops the study as Ctrl-C
would (`vaestudy.study.interrupts.stop`: trials checkpointed, runs closed) with a message naming the
filesystem; `vaestudy run` then exits 1, and `--resume` continues once there is room.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from vaestudy.study import interrupts
from vaestudy.tracking.stores import optuna_storage_url, sqlite_file, store_uri, tune_storage_uri

MIN_FREE_MB = 64.0
INTERVAL_S = 2.0


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path` (or its nearest existing ancestor)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def low_space(paths: Iterable[Path], min_free_mb: float = MIN_FREE_MB) -> str | None:
    """Why one of the filesystems holding `paths` is too full for a study, or None."""
    for path in paths:
        mount = mount_point(path)
        free = shutil.disk_usage(mount).free / 2**20
        if free < min_free_mb:
            return (
                f"the filesystem at {mount} (holding {path}) has {free:.0f} MiB free, under the "
                f"{min_free_mb:.0f} MiB a study keeps in reserve; free some space there"
            )
    return None


def study_paths(
    tracking_uri: str | None, storage_path: str | None, optuna_storage: str | None
) -> list[Path]:
    """The local folders a study writes to: a SQLite tracking store's and Optuna storage's,
    Ray Tune's storage (and the study log in it) when it is a local path, and the temporary
    folder (Ray's session files)."""
    paths = [Path(tempfile.gettempdir())]
    for url in (store_uri(tracking_uri), optuna_storage_url(optuna_storage)):
        if (database := sqlite_file(url)) is not None:
            paths.append(database.parent)
    tune = tune_storage_uri(storage_path)
    if "://" not in tune:
        paths.append(Path(tune))
    return paths


def watching(paths: list[Path]) -> contextlib.AbstractContextManager[None]:
    """While the block runs, stop the study (`interrupts.stop`) if a filesystem holding
    `paths` drops under `MIN_FREE_MB` free."""

    def check() -> str | None:
        why = low_space(paths)
        return None if why is None else f"disk nearly full: {why}"

    return interrupts.watching(check, INTERVAL_S, "vaestudy-disk-watch")
