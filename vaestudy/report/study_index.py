"""The table of study runs (`vaestudy studies`, `api.studies`): one row per study run with its
trial counts, from the runs tagged with a study (`vaestudy.tracking.run_reader`: a local SQLite
store read with SQL, so the command answers in about a second; a tracking server through MLflow's
client).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vaestudy.tracking.run_reader import RunRecord, reader
from vaestudy.tracking.tags import (
    PARENT,
    TAG_FEASIBLE,
    TAG_INTERRUPTED,
    TAG_KIND,
    TAG_OPTUNA,
    TAG_STUDY,
)

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = ["study", "run", "run_id", "started", "status", "trials", "finished", "feasible",
           "optuna_study"]  # fmt: skip


def studies(tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per study run, newest first within each study: `study`, `run` (its name, also
    its Optuna study's), `run_id`, `started` (UTC), `status`, `trials` (interrupted attempts
    that were run again not counted), `finished`, `feasible`, `optuna_study`."""
    import pandas as pd

    records = reader(tracking_uri).tagged_runs()
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
