"""A study run's session: the services it uses, started once, by one owner, and stopped by it.

`open_session` yields a `Session` for as long as the study runs: the tracking server (a loopback
`mlflow server` over the local store, or the server given, checked), Ray (started locally or
joined; it starts while the tracking server starts: both take seconds), MLflow's client, and a
reader of the store (`vaestudy.tracking.run_reader`: SQL on a local store). On a cluster it checks
that one trial fits on some node. When the session ends it stops what it started: the local tracking
server, and Ray when Ray was not up before it (a Ray a caller started, a test's or a notebook's,
stays up), the two at once. MLflow and Ray are imported once their start is under way, so that
the command says what it does from its first second.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaestudy.study.spec import Study
from vaestudy.tracking.run_reader import ClientReader, RunReader, local_reader
from vaestudy.tracking.stores import store_uri, tracking_session, tune_storage_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass
class Session:
    """What the tuner and outcome stages use."""

    uri: str  # the tracking URI every trial process writes to (HTTP)
    client: MlflowClient
    reader: RunReader  # the same store, read back (the report)
    address: str | None  # the Ray cluster's, as given (None: $RAY_ADDRESS or a local Ray)
    storage: (
        str  # Ray Tune's storage for a new study run (`vaestudy.tracking.stores.tune_storage_uri`)
    )


@contextlib.contextmanager
def open_session(
    study: Study,
    tracking_uri: str | None = None,
    address: str | None = None,
    storage_path: str | None = None,
    while_starting: Callable[[], None] | None = None,
) -> Iterator[Session]:
    """The session of a run of `study` (see the module doc). `while_starting` runs while the
    tracking server starts, before Ray is started if it has not started it itself (the CLI
    says what it does and imports the rest meanwhile)."""
    owns_ray = False

    def start() -> None:
        nonlocal owns_ray
        import ray

        owns_ray = not ray.is_initialized()
        if while_starting is not None:
            while_starting()
        from vaestudy.study.cluster import start_ray

        start_ray(address)  # nothing when `while_starting` started it

    stopping: threading.Thread | None = None
    try:
        with tracking_session(tracking_uri, while_starting=start) as uri:
            try:
                from mlflow.tracking import MlflowClient

                from vaestudy.study.cluster import check_cluster

                check_cluster(study, address)
                client = MlflowClient(uri)
                reader = local_reader(store_uri(tracking_uri)) or ClientReader(client)
                yield Session(uri, client, reader, address, tune_storage_uri(storage_path))
            finally:
                if owns_ray:  # Ray stops while the tracking server stops
                    import ray

                    stopping = threading.Thread(target=ray.shutdown, name="ray shutdown")
                    stopping.start()
    finally:
        if stopping is not None:
            stopping.join()
