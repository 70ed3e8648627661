"""Confirmation: each variant's selected configuration retrained with fresh seeds.

After the search, `study.confirm.seeds: N` retrains, for every objective variant, the trial
selected on the validation split (its best trial feasible there by the study's first metric, or
its best finished one when none is feasible) with N seeds the search never used
(`confirm.first_seed`, `first_seed + 1`, ...; only `train.seed` changes: the data, and so the
validation split, stay as they were). These runs are trials of the same study run: MLflow child
runs tagged `vaestudy.phase = confirm` and `vaestudy.confirms = <the selected trial's run id>`,
named `<variant> #<the trial's number> seed <s>`. Their test metrics are the study's verdict
with its uncertainty (`vaestudy.report.tables.confirmation_table`, `vaestudy.report.intervals`).

The ledger is a second Optuna study, `<run>-confirm`, in the same storage, with one parameter:
the index of a plan entry (which trial, which seed). Every entry that has not run (or whose
attempts errored, or that a killed driver cut) is enqueued as a fixed trial, so the search walks
the plan exactly once whatever the sampler. The plan is derived again, identically, from the
search's results on `--resume`, and the ledger knows which entries ran, so a resumed study runs
only the missing ones. Confirmation runs train alone (one per Tune trial, no scheduler) even
when the search packs its trials: they differ in their objective, which packed members may not.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from vaestudy.report.tables import Report
from vaestudy.study.search import TUNE_ID, SearchSpace, StudySearch, counts, make_search
from vaestudy.study.spec import CONFIRM_INDEX, CONFIRMS, Study
from vaestudy.tracking.tags import TAG_TRIAL

LEDGER_SUFFIX = "-confirm"  # the confirmation ledger's Optuna study: `<run name>-confirm`


def selected_trials(report: Report) -> list[pd.Series]:
    """Per variant, the search trial that confirmation retrains (`Report.selection`)."""
    picks = [report.selection(variant)[0] for variant in report.summary["variant"]]
    return [pick for pick in picks if pick is not None]


def plan(
    study: Study, report: Report, client: MlflowClient, search: optuna.Study
) -> list[dict[str, Any]]:
    """The confirmation runs' trial params, in order: for each selected trial, its sampled
    params (as the search resolved them) with `train.seed` set to each fresh seed."""
    space = SearchSpace(study)
    by_tune_id = {t.user_attrs.get(TUNE_ID): t for t in search.get_trials(deepcopy=False)}
    seeds = study.spec.confirm.seeds_list()
    out = []
    for pick in selected_trials(report):
        searched = by_tune_id[client.get_run(pick["run_id"]).data.tags[TAG_TRIAL]]
        params = space.resolve(searched.params)
        for seed in seeds:
            confirm = {"run_id": pick["run_id"], "number": searched.number, "seed": seed}
            out.append({**copy.deepcopy(params), "train.seed": seed, CONFIRMS: confirm})
    return out


class PlanSpace:
    """Define-by-run space over the plan: one categorical, the plan entry's index (enqueued)."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        index = trial.suggest_categorical(CONFIRM_INDEX, list(range(len(self.entries))))
        return copy.deepcopy(self.entries[index])


def _index(trial: optuna.trial.FrozenTrial) -> int | None:
    fixed = trial.system_attrs.get("fixed_params", {})  # an enqueued trial's, until it runs
    return trial.params.get(CONFIRM_INDEX, fixed.get(CONFIRM_INDEX))


def enqueue_missing(study: Study, entries: list[dict[str, Any]], storage_url: str, name: str):
    """Create (or load) the ledger and enqueue each plan entry that is neither waiting, running,
    nor ended in a result."""
    directions = ["minimize" if m == "min" else "maximize" for m in study.spec.modes]
    ledger = optuna.create_study(
        storage=storage_url, study_name=name, directions=directions, load_if_exists=True
    )
    live = (TrialState.WAITING, TrialState.RUNNING)
    have = {
        _index(t) for t in ledger.get_trials(deepcopy=False) if t.state in live or (
            t.state.is_finished() and counts(t))
    }  # fmt: skip
    for i in range(len(entries)):
        if i not in have:
            ledger.enqueue_trial({CONFIRM_INDEX: i})


def make_confirm_search(
    study: Study, entries: list[dict[str, Any]], storage_url: str, name: str
) -> StudySearch:
    """The search that runs the plan's enqueued entries, one run per Tune trial."""
    enqueue_missing(study, entries, storage_url, name)
    sampler = optuna.samplers.RandomSampler(seed=0)  # never consulted: every entry is fixed
    return make_search(
        study, storage_url, name, space=PlanSpace(entries), sampler=sampler,
        num_trials=len(entries), pack=1,
    )  # fmt: skip
