"""The notebook API: studies, their runs and their answers as pandas, read from the store.

```python
from vaestudy import api

api.studies()                          # every study run: status, trials, finished, feasible
r = api.report("geco")                 # the newest run; r.trials, r.summary, r.confirmation,
                                       # r.margins, r.pairs (with confirmation)
r = api.report("geco", run="geco-2")   # a run by name, id or id prefix
api.compare(["geco@geco", "geco@geco-2"]).summary   # two runs (or two studies) side by side
api.optuna_study("geco")               # the optuna.Study its search used
api.best("geco").config                # the selected trial's config (`vaestudy train`)
```

Every function takes `tracking_uri` (default: `$MLFLOW_TRACKING_URI`, else the project's local
store `mlflow/mlflow.db`, read directly with SQL (`vaestudy.tracking.run_reader`): no server needed,
artifacts included). The CLI's
`studies`, `report`, `compare` and `best` commands are these functions. Words as everywhere
(`vaestudy.training.feasibility`): a trial *satisfies its own constraints*, *satisfies the
yardstick*, or both: *feasible*; "best" is the search's best trial feasible on the validation split
by the study's first metric (a validation metric); `confirmation` is the verdict on the test split
of its retraining with fresh seeds (`study.confirm`): per variant its constraints' verdict, rates
and mean with intervals, and its rank from paired differences; `margins` per variant and
constraint, `pairs` per pair of variants (`vaestudy.report.verdicts`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from vaestudy.errors import UserError
from vaestudy.report.study_index import studies  # noqa: F401 - api.studies(), the notebook API's
from vaestudy.report.tables import Report, build_report, compare_reports
from vaestudy.tracking.run_reader import reader
from vaestudy.tracking.tags import TRIAL_CONFIG

if TYPE_CHECKING:
    import optuna


def report(study: str, run: str | None = None, tracking_uri: str | None = None) -> Report:
    """The report of `study` (its newest run, or `run`: a name, id or id prefix): `trials` and
    `summary` DataFrames, the yardstick, `best_feasible()`."""
    return build_report(reader(tracking_uri), study, run)


def selection(text: str) -> tuple[str, str | None]:
    """`STUDY` (its newest run) or `STUDY@RUN` -> (study, run or None)."""
    study, _, run = text.partition("@")
    return study, run or None


def compare(selections: Sequence[str], tracking_uri: str | None = None) -> Report:
    """Several runs (`STUDY` or `STUDY@RUN` each) in one report: every trial, its variant
    prefixed by its run's name (`geco-2: geco`), each judged by its own run's yardstick."""
    store = reader(tracking_uri)
    return compare_reports([build_report(store, *selection(s)) for s in selections])


def optuna_study(
    study: str, run: str | None = None, tracking_uri: str | None = None
) -> optuna.Study:
    """The `optuna.Study` the search of `study`'s run used (constraints, values, parameters)."""
    from vaestudy.report.search_plots import load_search

    found = report(study, run, tracking_uri)
    ot, why = load_search(found.run_name, found.optuna_storage)
    if ot is None:
        raise UserError(why)
    return ot


@dataclass
class BestTrial:
    study: str
    run_name: str  # the study run's
    trial: str  # the trial's run name, e.g. `geco #7`
    run_id: str  # the trial's MLflow run
    variant: str
    state: str  # feasible | yardstick only | own only | neither
    metric: str
    value: float
    config: dict[str, Any]  # the whole trial config: what `vaestudy train` runs

    def yaml(self) -> str:
        """The config as a YAML file `vaestudy train` runs, with where it came from."""
        head = (
            f"# trial {self.trial} of study {self.study}, run {self.run_name} (state: "
            f"{self.state}; {self.metric} {self.value:.6g})\n"
            f"# MLflow run {self.run_id}; vaestudy train FILE\n"
        )
        return head + yaml.safe_dump(self.config, sort_keys=False)


def best(
    study: str,
    run: str | None = None,
    tracking_uri: str | None = None,
    feasible: bool = True,
) -> BestTrial | None:
    """The search's best trial feasible on validation by the study's first metric, with its
    config; None when no trial is feasible there. `feasible=False`: the best finished trial,
    feasible or not."""
    store = reader(tracking_uri)
    found = build_report(store, study, run)
    row = found.best_feasible() if feasible else found.best_finished()
    if row is None:
        return None
    try:
        config = yaml.safe_load(store.artifact_text(row["run_id"], TRIAL_CONFIG))
    except OSError as exc:
        raise UserError(
            f"trial {row['trial']} (run {row['run_id']}) has no {TRIAL_CONFIG} artifact "
            f"({exc}); trials record it since vaestudy logs each trial's config"
        ) from None
    value = float(row[found.metric])
    return BestTrial(
        study=found.study,
        run_name=found.run_name,
        trial=row["trial"],
        run_id=row["run_id"],
        variant=row["variant"],
        state=row["state"],
        metric=found.metric,
        value=value if math.isfinite(value) else math.nan,
        config=config,
    )
