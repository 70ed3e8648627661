"""Where a study writes, and whether it can: the MLflow tracking store, the Optuna storage and
Ray Tune's storage; and the loopback `mlflow server` a study's trials log through. Standard
library only, so that `vaestudy validate` and the preflight checks (`vaestudy.study.preflight`)
answer without importing MLflow, Optuna or Ray, and so that `vaestudy run` starts the tracking
server (a subprocess) before it imports them.

Many trial processes writing one SQLite file would hit "database is locked", so for a study the
driver starts one `mlflow server` on loopback over a local store and every trial logs over
HTTP; an `http(s)://` URI is used as it is.

Defaults (no `--tracking-uri`, no `$MLFLOW_TRACKING_URI`): the project's `mlflow/` folder, with
`mlflow/mlflow.db` (SQLite), `mlflow/artifacts/` and `mlflow/optuna.db`; Tune results under
`./ray_results`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from vaestudy.errors import UserError

_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


class TrackingError(UserError):
    """The tracking store cannot be reached or used."""


def default_store(root: Path | None = None) -> Path:
    return (root or Path.cwd()) / "mlflow"


def store_uri(uri: str | None) -> str:
    """The backend URI asked for: the argument, $MLFLOW_TRACKING_URI, or the local store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(default_store() / 'mlflow.db').resolve()}"


OPTUNA_STORAGE_ENV = "VAESTUDY_OPTUNA_STORAGE"  # default of --optuna-storage
STORAGE_PATH_ENV = "VAESTUDY_STORAGE_PATH"  # default of --storage-path


def optuna_storage_url(url: str | None = None) -> str:
    """The Optuna storage: `url` (`--optuna-storage`: any Optuna RDB URL, e.g.
    `postgresql://user:password@host/db`), else $VAESTUDY_OPTUNA_STORAGE, else the local file
    beside the local MLflow store, `mlflow/optuna.db`."""
    return url or os.environ.get(OPTUNA_STORAGE_ENV) or local_optuna_storage()


def local_optuna_storage() -> str:
    """The local Optuna storage, beside the local MLflow store: `mlflow/optuna.db`."""
    return f"sqlite:///{(default_store() / 'optuna.db').resolve()}"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (`sqlite:///relative.db`, `sqlite:////abs.db`; a query
    such as `?timeout=30` is no part of the path), parsed by SQLAlchemy's `make_url`; None for
    any other URL and for an in-memory database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def made_ready(url: str) -> str:
    """`url` with its Optuna tables made: for a SQLite file, its folder too (Optuna opens, not
    creates, folders), and under `sqlite_lock`, so that studies starting together on one new
    file do not create its schema twice."""
    import optuna

    path = sqlite_file(url)
    if path is None:
        optuna.storages.RDBStorage(url)
        return url
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite_lock(path):
        optuna.storages.RDBStorage(url)
    return url


@contextlib.contextmanager
def sqlite_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `<path>.lock` (for a SQLite file's schema creation: one process
    at a time; the others wait, then find the tables made)."""
    with open(f"{path}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def redacted(url: str) -> str:
    """`url` without its password (`postgresql://user:***@host/db`): to record or print."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def lacks_password(url: str) -> bool:
    """Whether `url` was recorded by `redacted`: its password is `***`."""
    return urllib.parse.urlsplit(url).password == "***"


TUNE_STORAGE = "ray_results"  # Ray Tune's storage without --storage-path


def tune_storage_uri(storage_path: str | None) -> str:
    """Ray Tune's storage as Tune takes it: `--storage-path`, else $VAESTUDY_STORAGE_PATH,
    else `./ray_results`; a URI (`s3://bucket/path`, `gs://...`: anything pyarrow opens; an S3
    endpoint of one's own through AWS_ENDPOINT_URL_S3) is kept as given, a local path made
    absolute. On a cluster of several nodes it must be storage every node reaches."""
    value = storage_path or os.environ.get(STORAGE_PATH_ENV) or TUNE_STORAGE
    return value.rstrip("/") if "://" in value else str(Path(value).resolve())


def remote_storage_problem(uri: str) -> str | None:
    """Why Ray Tune's storage `uri` (`s3://`, `gs://`, ...) cannot be opened from here, or
    None. pyarrow (Ray's) opens it as Tune will: credentials and endpoint from the environment
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3 for an S3 of one's own)."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        fs.get_file_info(path)
    except (OSError, ValueError) as exc:
        return f"Ray Tune storage {uri} cannot be opened ({str(exc).splitlines()[0]})"
    return None


def uri_parent(path: str) -> tuple[str, str]:
    """(`parent`, `name`) of a local path or a URI: the inverse of `uri_child`."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent, name


def uri_child(parent: str, name: str) -> str:
    """`parent`/`name` for a local path or a URI (`s3://bucket/a` -> `s3://bucket/a/name`)."""
    return f"{parent.rstrip('/')}/{name}"


def tune_storage(storage_path: str | None) -> Path:
    """The local folder for the study's log file: Tune's storage when it is local (see
    `tune_storage_uri`), else `./ray_results`."""
    uri = tune_storage_uri(storage_path)
    return Path(TUNE_STORAGE).resolve() if "://" in uri else Path(uri)


def ui_url(server: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment (its runs table) or a run, in the UI's model-training
    view: MLflow 3's UI otherwise opens in its GenAI view (a per-browser switch that the
    `workflowType` parameter sets)."""
    page = "experiments"
    if experiment_id is not None:
        page += f"/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{server.rstrip('/')}/#/{page}?workflowType=machine_learning"


USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def take_credentials(uri: str | None) -> str | None:
    """`uri` without the user and password it may carry (`http://user:secret@host:port`): they
    move to MLflow's own variables ($MLFLOW_TRACKING_USERNAME, $MLFLOW_TRACKING_PASSWORD, which
    MLflow's client sends as HTTP basic auth, and local Ray workers inherit), so no output, log,
    tag or param ever holds the password. Call it before anything prints or starts."""
    if not uri or "@" not in uri or not uri.startswith(("http://", "https://")):
        return uri
    parts = urllib.parse.urlsplit(uri)
    if parts.username is not None:
        os.environ[USERNAME_ENV] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        os.environ[PASSWORD_ENV] = urllib.parse.unquote(parts.password)
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def answers(uri: str, timeout: float) -> bool:
    """Whether the HTTP tracking server at `uri` answers `/health` within `timeout` seconds
    (any answer: a server that refuses or fails a request is there)."""
    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except OSError:  # refused, unreachable, timed out
        return False
    return True


def check_server(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, with a clear message, when an HTTP tracking server does not answer, or does
    not take this client's credentials (basic auth from $MLFLOW_TRACKING_USERNAME/PASSWORD)."""
    base = uri.rstrip("/")
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    user = os.environ.get(USERNAME_ENV)
    if user is not None:
        token = base64.b64encode(f"{user}:{os.environ.get(PASSWORD_ENV, '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(
                    f"MLflow tracking server {uri} answered /health with {resp.status}"
                )
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            who = f"user {user!r}" if user is not None else "no credentials"
            raise TrackingError(
                f"MLflow tracking server {uri} refused {who} (HTTP {exc.code}); give the user "
                f"and password in {USERNAME_ENV} and {PASSWORD_ENV}, or in the URI "
                "(http://USER:PASSWORD@host:port)"
            ) from None
        raise TrackingError(f"MLflow tracking server {uri} answered with {exc.code}") from None
    except OSError as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start it or pass another "
            "--tracking-uri (nothing was run)"
        ) from None


def unreachable(host: str, port: int, timeout: float = 5.0) -> OSError | None:
    """Why nothing accepts a TCP connection at host:port within `timeout`, or None."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return exc
    return None


def writable_path_problem(path: Path, what: str) -> str | None:
    """Why `path` (a directory or file that may not exist yet) cannot be written, or None.
    Nothing is created: the nearest existing ancestor must be a writable directory."""
    path = path.resolve()
    if path.exists():
        if not os.access(path, os.W_OK):
            return f"{what} {path} is not writable"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{what} {path}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK):
        return f"{what} {path} cannot be created: {parent} is not writable"
    return None


def tracking_problem(uri: str | None, timeout: float = 5.0) -> str | None:
    """Why the tracking store `uri` (see `store_uri`) cannot be used, or None: an HTTP server
    must answer /health; a SQLite file must be writable or creatable; a database server (e.g.
    `postgresql://host:port/db`) must accept a TCP connection."""
    backend = store_uri(uri)
    scheme = urllib.parse.urlsplit(backend).scheme
    if scheme in ("http", "https"):
        try:
            check_server(backend, timeout=timeout)
        except TrackingError as exc:
            return str(exc)
        return None
    return database_problem(backend, "tracking store", timeout)


def database_problem(url: str, what: str, timeout: float = 5.0) -> str | None:
    """Why the database `url` (`sqlite:///PATH`, `postgresql://host:port/db`, `mysql://...`)
    cannot be used, or None: a SQLite file must be writable or creatable, a server must accept
    a TCP connection."""
    scheme = urllib.parse.urlsplit(url).scheme
    if (path := sqlite_file(url)) is not None:
        return writable_path_problem(path, what) or sqlite_damage(path, what)
    base = scheme.split("+")[0]
    if base in _DEFAULT_PORTS:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or _DEFAULT_PORTS[base]
        if (exc := unreachable(host, port, timeout)) is not None:
            return f"{what} {base}://{host}:{port} is unreachable ({exc})"
        return None
    return (
        f"{what} {redacted(url)!r}: expected sqlite:/// or a database URL (postgresql://, "
        "mysql://)" + (" or http(s)://" if what == "tracking store" else "")
    )


def sqlite_damage(path: Path, what: str) -> str | None:
    """Why the SQLite file at `path` (if it exists) is damaged, by SQLite's own check
    (`PRAGMA quick_check`, read-only: nothing is written), or None."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        verdict = str(exc)
    if verdict == "ok":
        return None
    return (
        f"{what} {path} is damaged (SQLite: {verdict.splitlines()[0]}); nothing was written to "
        f"it. Restore it from a backup, or move it aside (mv {path} {path}.damaged) to start a "
        f"new one; `sqlite3 {path} .recover` may rescue what it holds"
    )


def readable_store(tracking_uri: str | None = None) -> str:
    """The tracking store's URI (`store_uri`), once it can be read: a local SQLite store that
    exists and is not damaged, or a server that answers; otherwise a clear `UserError`."""
    backend = store_uri(tracking_uri)
    if (path := sqlite_file(backend)) is not None:
        if not path.is_file():
            raise UserError(
                f"no tracking store at {path}: run a study first (vaestudy run STUDY.yaml) or "
                "pass --tracking-uri"
            )
        if (damage := sqlite_damage(path, "tracking store")) is not None:
            raise UserError(damage)
    elif backend.startswith(("http://", "https://")):
        check_server(backend)
    return backend


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    backend_uri: str,
    port: int | None = None,
    startup_timeout: float = 180.0,
    while_starting: Callable[[], None] | None = None,
    host: str = "127.0.0.1",
) -> Iterator[str]:
    """Run `mlflow server` on `host` (loopback by default) over `backend_uri` (on `port`, or a
    free one); yield its http:// URI once it answers. `while_starting` runs while the server
    starts (it takes tens of seconds on a small machine). On exit the server's whole process
    group (uvicorn included) is stopped; if this process dies without exiting (SIGKILL), the
    group stops itself (`vaestudy.tracking.server_guard`)."""
    database = sqlite_file(backend_uri)
    store = default_store() if database is None else database.parent
    store.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    uri = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    artifacts = (store / "artifacts").resolve()
    cmd = [
        sys.executable, "-m", "vaestudy.tracking.server_guard",  # the server dies with this process
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        # New experiments keep their artifacts at a file:// location, so a client opened on
        # the store itself (`MlflowClient("sqlite:///mlflow/mlflow.db")`) lists and downloads
        # them without a server; experiments made before (`mlflow-artifacts:/`) stay proxied.
        "--default-artifact-root", artifacts.as_uri(),
        "--artifacts-destination", str(artifacts),
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # The server's background job runner serves GenAI features vaestudy does not use.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(store / "server.log", "ab")  # noqa: SIM115 - closed below
    # A server creates a new SQLite store's schema: one at a time on one file (the lock is held
    # until this one answers; a second study's server then finds the tables made).
    starting = contextlib.ExitStack()
    if database is not None:
        starting.enter_context(sqlite_lock(database))
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + startup_timeout
        with starting:
            while True:
                if proc.poll() is not None:
                    raise TrackingError(
                        f"mlflow server over {backend_uri} exited ({proc.returncode}); "
                        f"see {store / 'server.log'}"
                    )
                try:
                    check_server(uri, timeout=2)
                    break
                except TrackingError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        yield uri
    finally:
        starting.close()
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL whatever is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def tracking_session(
    uri: str | None, while_starting: Callable[[], None] | None = None
) -> Iterator[str]:
    """Yield an HTTP tracking URI usable from every trial process for the session's length;
    `while_starting` runs meanwhile (while a local server starts, see `serve`)."""
    backend = store_uri(uri)
    if backend.startswith(("http://", "https://")):
        check_server(backend)
        if while_starting is not None:
            while_starting()
        yield backend
    else:
        with serve(backend, while_starting=while_starting) as served:
            yield served
