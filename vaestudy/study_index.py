"""The table of study runs (`vaestudy studies`, `api.studies`): one row per study run with its
trial counts. A local SQLite tracking store is read directly, read-only, with SQL on MLflow's
`runs` and `tags` tables (standard library: neither MLflow nor its database layer is imported,
so the command answers in about a second); a tracking server is asked through MLflow's client.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from vaestudy.stores import readable_store, sqlite_file
from vaestudy.tags import PARENT, TAG_FEASIBLE, TAG_INTERRUPTED, TAG_KIND, TAG_OPTUNA, TAG_STUDY

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["study", "run", "run_id", "started", "status", "trials", "finished", "feasible",
           "optuna_study"]  # fmt: skip


@dataclass
class RunRecord:
    """What the table needs of one run (a study's parent run or a trial's run)."""

    run_id: str
    name: str
    status: str
    start_time: int  # ms since the epoch
    tags: dict[str, str]


def _sqlite_records(path: Path) -> list[RunRecord]:
    """Every active run tagged with a study, in an active experiment, from the store's file."""
    query = f"""
        SELECT r.run_uuid, r.name, r.status, r.start_time, t.key, t.value
        FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
        JOIN tags t ON t.run_uuid = r.run_uuid
        WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
          AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = '{TAG_STUDY}' AND value != '')
    """
    records: dict[str, RunRecord] = {}
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as con:
        for run_id, name, status, start, key, value in con.execute(query):
            record = records.setdefault(run_id, RunRecord(run_id, name, status, start or 0, {}))
            record.tags[key] = value
    return list(records.values())


def _client_records(uri: str) -> list[RunRecord]:
    """The same runs, asked of a tracking server (or any non-file store) by MLflow's client."""
    from mlflow.tracking import MlflowClient

    from vaestudy.tracking import search_all

    client = MlflowClient(uri)
    return [
        RunRecord(r.info.run_id, r.info.run_name, r.info.status, r.info.start_time, r.data.tags)
        for exp in client.search_experiments()
        for r in search_all(client, exp.experiment_id, f"tags.`{TAG_STUDY}` != ''")
    ]


def studies(tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per study run, newest first within each study: `study`, `run` (its name, also
    its Optuna study's), `run_id`, `started` (UTC), `status`, `trials` (interrupted attempts
    that were run again not counted), `finished`, `feasible`, `optuna_study`."""
    import pandas as pd

    backend = readable_store(tracking_uri)
    path = sqlite_file(backend)
    records = _sqlite_records(path) if path is not None else _client_records(backend)
    trials: dict[str, list[RunRecord]] = {}
    for run in records:
        if PARENT in run.tags and TAG_INTERRUPTED not in run.tags:
            trials.setdefault(run.tags[PARENT], []).append(run)
    rows = []
    for run in records:
        if run.tags.get(TAG_KIND) != "study":
            continue
        kids = trials.get(run.run_id, [])
        started = datetime.fromtimestamp(run.start_time / 1000, UTC)
        rows.append({
            "study": run.tags[TAG_STUDY],
            "run": run.name,
            "run_id": run.run_id,
            "started": started.strftime("%Y-%m-%d %H:%M"),
            "status": run.status,
            "trials": len(kids),
            "finished": sum(k.status == "FINISHED" for k in kids),
            "feasible": sum(k.tags.get(TAG_FEASIBLE) == "true" for k in kids),
            "optuna_study": run.tags.get(TAG_OPTUNA, ""),
        })  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["study", "started"], ascending=[True, False], ignore_index=True)
