"""The runs a study left in its tracking store, read back: what `report`, `best`, `compare` and
`studies` read.

`RunReader` is one small interface with two readers. `SqliteReader` reads a local SQLite store
(`mlflow/mlflow.db`) directly, read-only, with SQL on MLflow's tables (`runs`, `experiments`,
`tags`, `params`, `latest_metrics`, `metrics`) and takes artifacts from their `file://`
folders: standard library only, so a read command needs neither MLflow nor its database layer
(measured: `vaestudy best` 5 s -> under 2 s). `ClientReader` asks any store (a tracking server,
a database) through MLflow's client; a test checks that both give the same runs and the same
report. `reader(tracking_uri)` picks one. Values are MLflow's: a metric is its latest value
(highest step, then newest), NaN where MLflow stored NaN.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from vaestudy.tracking.stores import readable_store, sqlite_file
from vaestudy.tracking.tags import PARENT, TAG_KIND, TAG_STUDY

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

History = list[dict[str, float]]  # one dict per step: {"step": s, key: value, ...}


@dataclass
class RunRecord:
    """One run as a report reads it (the parts of MLflow's `Run` it uses)."""

    run_id: str
    name: str
    status: str  # RUNNING | FINISHED | FAILED | KILLED
    start_time: int  # ms since the epoch
    experiment_id: str
    artifact_uri: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class RunReader:
    """What a report reads of a store. Runs are active runs of active experiments."""

    def experiments(self) -> list[str]:
        """The names of the store's active experiments."""
        raise NotImplementedError

    def tagged_runs(self) -> list[RunRecord]:
        """Every run tagged with a study (parent runs and trials), with their tags only."""
        raise NotImplementedError

    def study_runs(self, study: str) -> list[RunRecord]:
        """The parent runs of `study` in its experiment, newest first."""
        raise NotImplementedError

    def trial_runs(self, parent: RunRecord) -> list[RunRecord]:
        """The trial (child) runs of the study run `parent`."""
        raise NotImplementedError

    def history(self, run_id: str, keys: Sequence[str]) -> History:
        """Every logged point of `keys`, one dict per step (keys as logged)."""
        raise NotImplementedError

    def metric_keys(self, run_id: str) -> list[str]:
        """The keys of every metric the run logged."""
        raise NotImplementedError

    def artifact_text(self, run_id: str, path: str) -> str:
        """The text of the run's artifact `path` (OSError when it has none)."""
        raise NotImplementedError

    def mlflow_client(self) -> MlflowClient:
        """MLflow's client on the same store (for what this interface does not read)."""
        raise NotImplementedError

    def artifact_folder(self, run_id: str) -> Path | None:
        """The local folder that holds the run's artifacts, or None when they live elsewhere
        (object storage, behind a server): then MLflow's client reads and writes them."""
        return None


def reader(tracking_uri: str | None = None) -> RunReader:
    """The reader of the tracking store (`vaestudy.tracking.stores.readable_store`: a missing local
    store or an unreachable server is a clear `UserError`): SQL for a local SQLite file whose
    schema the SQL reader knows (`local_reader`), else MLflow's client."""
    backend = readable_store(tracking_uri)
    return local_reader(backend) or _client_reader(backend)


def _client_reader(backend: str) -> ClientReader:
    from mlflow.tracking import MlflowClient

    return ClientReader(MlflowClient(backend))


# The MLflow store schemas (alembic revisions) the SQL reader was tested with: MLflow 3's.
TESTED_SCHEMAS = ("dc11669786a5",)


def schema_revision(path: Path) -> str | None:
    """The alembic revision of the MLflow store at `path` (None: not an MLflow store yet)."""
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return rows[0][0] if rows else None


def local_reader(backend: str) -> SqliteReader | None:
    """SQL on `backend` when it is a local SQLite store with a schema in `TESTED_SCHEMAS`; None
    otherwise (a server, another database, or a store another MLflow release made or migrated:
    MLflow's client reads those, whatever their tables look like)."""
    path = sqlite_file(backend)
    if path is None or schema_revision(path) not in TESTED_SCHEMAS:
        return None
    return SqliteReader(path)


def as_reader(source: RunReader | MlflowClient) -> RunReader:
    """`source` itself, or a `ClientReader` on an MLflow client."""
    return source if isinstance(source, RunReader) else ClientReader(source)


def by_steps(points: Iterable[tuple[str, int, float]]) -> History:
    """(key, step, value) points, in logging order, as one dict per step (the last value of a
    key logged twice at one step wins)."""
    rows: dict[int, dict[str, float]] = {}
    for key, step, value in points:
        rows.setdefault(step, {"step": float(step)})[key] = value
    return [rows[s] for s in sorted(rows)]


_ACTIVE_RUNS = """
    SELECT r.run_uuid, r.name, r.status, r.start_time, r.experiment_id, r.artifact_uri
    FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
    WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
"""
_TAGGED = "r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value {})"
_CHUNK = 500  # run ids per `IN (...)` query


class SqliteReader(RunReader):
    """A local SQLite tracking store read with SQL, read-only (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, args: Sequence[object] = ()) -> list[tuple]:
        with sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True) as con:
            return con.execute(sql, args).fetchall()

    def _runs(self, where: str, args: Sequence[object], data: bool = True) -> list[RunRecord]:
        rows = self._query(f"{_ACTIVE_RUNS} AND {where} ORDER BY r.start_time DESC", args)
        runs = {
            r[0]: RunRecord(r[0], r[1] or "", r[2], r[3] or 0, str(r[4]), r[5] or "", {})
            for r in rows
        }
        ids = list(runs)
        tables = ("tags", "params", "latest_metrics") if data else ("tags",)
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for table in tables:
                nan = ", is_nan" if table == "latest_metrics" else ", 0"
                sql = f"SELECT run_uuid, key, value{nan} FROM {table} WHERE run_uuid IN ({marks})"
                for run_id, key, value, is_nan in self._query(sql, chunk):
                    run = runs[run_id]
                    if table == "tags":
                        run.tags[key] = value
                    elif table == "params":
                        run.params[key] = value
                    else:
                        run.metrics[key] = math.nan if is_nan else float(value)
        for run in runs.values():
            run.name = run.name or run.tags.get("mlflow.runName", "")
        return list(runs.values())

    def experiments(self) -> list[str]:
        sql = "SELECT name FROM experiments WHERE lifecycle_stage = 'active'"
        return [name for (name,) in self._query(sql)]

    def tagged_runs(self) -> list[RunRecord]:
        return self._runs(_TAGGED.format("!= ''"), [TAG_STUDY], data=False)

    def study_runs(self, study: str) -> list[RunRecord]:
        where = f"e.name = ? AND {_TAGGED.format('= ?')} AND {_TAGGED.format('= ?')}"
        return self._runs(where, [study, TAG_KIND, "study", TAG_STUDY, study])

    def trial_runs(self, parent: RunRecord) -> list[RunRecord]:
        where = f"r.experiment_id = ? AND {_TAGGED.format('= ?')}"
        return self._runs(where, [parent.experiment_id, PARENT, parent.run_id])

    def history(self, run_id: str, keys: Sequence[str]) -> History:
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        sql = (
            f"SELECT key, step, value, is_nan FROM metrics WHERE run_uuid = ? AND key IN ({marks})"
            " ORDER BY step, timestamp"
        )
        rows = self._query(sql, [run_id, *keys])
        return by_steps((k, s, math.nan if nan else float(v)) for k, s, v, nan in rows)

    def metric_keys(self, run_id: str) -> list[str]:
        sql = "SELECT key FROM latest_metrics WHERE run_uuid = ?"
        return [key for (key,) in self._query(sql, [run_id])]

    def artifact_folder(self, run_id: str) -> Path | None:
        found = self._query("SELECT artifact_uri FROM runs WHERE run_uuid = ?", [run_id])
        uri = urlparse(found[0][0] if found and found[0][0] else "mlflow-artifacts:")
        return Path(unquote(uri.path)) if uri.scheme in ("", "file") else None

    def artifact_text(self, run_id: str, path: str) -> str:
        folder = self.artifact_folder(run_id)
        if folder is None:  # behind a server's proxy, or object storage
            return ClientReader(self.mlflow_client()).artifact_text(run_id, path)
        return (folder / path).read_text()

    def mlflow_client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        return MlflowClient(f"sqlite:///{self.path}")


class ClientReader(RunReader):
    """Any tracking store, through MLflow's client (a server, a database, a SQLite file)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    @staticmethod
    def record(run: Run) -> RunRecord:
        info, data = run.info, run.data
        return RunRecord(info.run_id, info.run_name or "", info.status, info.start_time or 0,
                         info.experiment_id, info.artifact_uri or "", dict(data.tags),
                         dict(data.params), dict(data.metrics))  # fmt: skip

    def experiments(self) -> list[str]:
        return [e.name for e in self.client.search_experiments()]

    def tagged_runs(self) -> list[RunRecord]:
        from vaestudy.tracking.runs import search_all

        found = []
        for exp in self.client.search_experiments():
            for run in search_all(self.client, exp.experiment_id, f"tags.`{TAG_STUDY}` != ''"):
                record = self.record(run)
                record.params, record.metrics = {}, {}
                found.append(record)
        return found

    def study_runs(self, study: str) -> list[RunRecord]:
        from vaestudy.tracking.runs import study_runs

        exp = self.client.get_experiment_by_name(study)
        if exp is None or exp.lifecycle_stage != "active":
            return []
        return [self.record(r) for r in study_runs(self.client, exp.experiment_id, study)]

    def trial_runs(self, parent: RunRecord) -> list[RunRecord]:
        from vaestudy.tracking.runs import trial_runs

        runs = trial_runs(self.client, parent.experiment_id, parent.run_id)
        return [self.record(r) for r in runs]

    def history(self, run_id: str, keys: Sequence[str]) -> History:
        points = []
        for key in keys:
            history = self.client.get_metric_history(run_id, key)
            ordered = sorted(history, key=lambda m: (m.step, m.timestamp))
            points += [(key, m.step, m.value) for m in ordered]
        return by_steps(points)

    def metric_keys(self, run_id: str) -> list[str]:
        return list(self.client.get_run(run_id).data.metrics)

    def mlflow_client(self) -> MlflowClient:
        return self.client

    def artifact_text(self, run_id: str, path: str) -> str:
        import tempfile

        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as folder:
            try:
                return Path(self.client.download_artifacts(run_id, path, folder)).read_text()
            except MlflowException as exc:
                raise OSError(str(exc)) from None
