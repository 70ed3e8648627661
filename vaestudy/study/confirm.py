"""Confirmation: each variant's selected configuration retrained with fresh seeds, raced.

After the search, `study.confirm` retrains, for every objective variant, the trial selected on
the validation split (its best trial feasible there by the study's first metric, or its best
finished one when none is feasible) with seeds the search never used (`first_seed`,
`first_seed + 1`, ...; only `train.seed` changes: the data, and so the validation split, stay as
they were). Every variant gets the same seeds, so variants compare seed by seed
(`vaestudy.report.verdicts`). These runs are trials of the same study run: MLflow child runs
tagged `vaestudy.phase = confirm` and `vaestudy.confirms = <the selected trial's run id>`, named
`<variant> #<the trial's number> seed <s>`. Their test metrics are the study's verdict with its
uncertainty.

**The race** (`confirm: {seeds: N, max_seeds: M, step: S}`): look 0 trains N seeds of every
variant; each later look trains S more seeds of the variants whose verdict is still open after
the previous look (`vaestudy.report.tables.open_after`: an undecided constraint, or a tie with a
neighbour, that M seeds could settle), until none is open or M seeds are spent. Decisions use the
Bonferroni level over the fixed schedule of looks (`Race.level`).

The looks run in one Ray Tune experiment (its workers stay up from look to look): the search
waits while a look's runs train, then enqueues the next look's (`Looks`).

**Packs.** With `confirm.pack` (default: when trials train on a GPU, where one small VAE leaves
the device mostly idle; on a CPU one trial already keeps its cores busy, and a pack measured
0.75–0.90x the seeds per hour of one at a time: `benchmarks/RESULTS.md`), a look trains each
variant's seeds as one packed computation: one Ray trial, one `VectorTrainer` whose members
differ only in `train.seed`, each drawing its own batches (`batches="own"`: independent
replicates), each with its own MLflow run as before. A config that cannot be vectorised
(`train.stop_saturated`, `train.compile`, `train.bf16`, divergence restarts) trains its seeds
one at a time.

**The ledger** is an Optuna study beside the search's, `<run>-confirm`, with one parameter: the
index of a plan entry (which trial, which seed; the plan holds every seed up to `max_seeds`).
The entries a look needs that have not run (or whose attempts errored, or that a killed driver
cut) are enqueued as fixed trials, so each runs exactly once whatever the sampler. The plan is
derived again, identically, on `--resume`, and each look's decision from the search's results
and the runs of the earlier looks only, so a resumed race, cut mid-look or between looks, runs
only the missing seeds. A look whose runs errored ends the race for this session.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from vaestudy.report.tables import Report, build_report, open_after
from vaestudy.report.verdicts import Race
from vaestudy.study.search import (
    TUNE_ID,
    PackSearch,
    SearchSpace,
    StudySearch,
    counts,
    enqueue,
    make_search,
    planned,
)
from vaestudy.study.spec import CONFIRM_INDEX, CONFIRMS, Study
from vaestudy.tracking.run_reader import RunReader
from vaestudy.tracking.tags import TAG_TRIAL

LEDGER_SUFFIX = "-confirm"  # the confirmation ledger's Optuna study: `<run name>-confirm`


def race(study: Study) -> Race:
    """The study's confirmation schedule (`study.confirm`)."""
    c = study.spec.confirm
    return Race(c.seeds, c.max_seeds or c.seeds, c.step or c.seeds, c.first_seed)


def selected_trials(report: Report) -> list[pd.Series]:
    """Per variant, the search trial that confirmation retrains (`Report.selection`)."""
    picks = [report.selection(variant)[0] for variant in report.summary["variant"]]
    return [pick for pick in picks if pick is not None]


def plan(
    study: Study, report: Report, client: MlflowClient, search: optuna.Study
) -> list[dict[str, Any]]:
    """Every run the race may train, as trial params, in order: for each selected trial, its
    sampled params (as the search resolved them) with `train.seed` set to each seed up to
    `max_seeds`. The looks pick from it (`Looks`)."""
    space = SearchSpace(study)
    by_tune_id = {t.user_attrs.get(TUNE_ID): t for t in search.get_trials(deepcopy=False)}
    out = []
    for pick in selected_trials(report):
        searched = by_tune_id[client.get_run(pick["run_id"]).data.tags[TAG_TRIAL]]
        params = space.resolve(searched.params)
        for seed in study.spec.confirm.seeds_list():
            confirm = {"run_id": pick["run_id"], "number": searched.number, "seed": seed}
            out.append({**copy.deepcopy(params), "train.seed": seed, CONFIRMS: confirm})
    return out


def pack_size(study: Study, entries: list[dict[str, Any]]) -> int:
    """Seeds trained together: a variant's seeds of one look, where packing is on
    (`confirm.pack`; by default when trials train on a GPU) and every config vectorises."""
    c = study.spec.confirm
    if not (c.pack if c.pack is not None else study.spec.resources.gpu > 0):
        return 1
    for params in entries:
        train = study.trial_config(params).train
        if train.stop_saturated or train.compile or train.bf16:
            return 1
    if study.spec.on_divergence.retries:
        return 1
    return max(c.seeds, c.step or c.seeds)


class PlanSpace:
    """Define-by-run space over the plan: one categorical, the plan entry's index (enqueued)."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        index = trial.suggest_categorical(CONFIRM_INDEX, list(range(len(self.entries))))
        return copy.deepcopy(self.entries[index])


def missing(ledger: optuna.Study, indices: list[int]) -> list[int]:
    """The plan entries among `indices` that are neither waiting, running, nor ended in a
    result (never run, errored, or cut by a killed driver)."""
    live = (TrialState.WAITING, TrialState.RUNNING)
    have = {
        planned(t, CONFIRM_INDEX) for t in ledger.get_trials(deepcopy=False) if t.state in live or (
            t.state.is_finished() and counts(t))
    }  # fmt: skip
    return [i for i in indices if i not in have]


class Looks:
    """The race over the plan (see the module doc): look 0's entries, then, whenever nothing
    waits or runs, the next look's entries for the variants still open, read from the tracking
    store (`open_after`). Picklable: Tune saves its searcher."""

    def __init__(
        self, study: Study, entries: list[dict[str, Any]], reader: RunReader, parent_run_id: str
    ) -> None:
        self.study, self.entries, self.reader = study, entries, reader
        self.parent_run_id = parent_run_id
        self.race = race(study)
        self.look = 0
        self.open: set[str] | None = None  # the variants the current look trains (None: all)

    def indices(self, look: int, variants: set[str] | None = None) -> list[int]:
        """Look `look`'s entries (of `variants` only, if given)."""
        seeds = set(self.race.new_seeds(look))
        return [
            i for i, e in enumerate(self.entries) if e["train.seed"] in seeds
            and (variants is None or self.study.variant(e) in variants)
        ]  # fmt: skip

    def __call__(self, ledger: optuna.Study) -> list[dict[str, Any]]:
        """What to enqueue now that nothing waits or runs: the next look's entries that have not
        run ([] ends the race: every verdict settled, `max_seeds` spent, or a run of the last
        look errored, which `--resume` runs again before the race goes on)."""
        while self.look + 1 < len(self.race.schedule()):
            if missing(ledger, self.indices(self.look, self.open)):
                return []  # a look whose runs errored decides nothing
            report = build_report(self.reader, self.study.name, self.parent_run_id)
            self.open = set(open_after(report, self.look))
            self.look += 1
            if not self.open:
                return []
            todo = missing(ledger, self.indices(self.look, self.open))
            if todo:  # (a resumed race: a look that already ran is passed)
                return [{CONFIRM_INDEX: i} for i in todo]
        return []


class VariantPacks(PackSearch):
    """Packs of enqueued plan entries that confirm one selected trial: a pack ends where the
    next waiting entry confirms another (packed members may differ only in their seed)."""

    def __init__(self, *args: Any, entries: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entries = entries

    def joins(self, first: dict[str, Any]) -> bool:
        waiting = self.ledger.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            return True  # nothing waits: the search says what comes next
        index = planned(waiting[0], CONFIRM_INDEX)  # Optuna runs enqueued trials in order
        return index is not None and (
            self.entries[index][CONFIRMS]["run_id"] == first[CONFIRMS]["run_id"]
        )


def make_confirm_search(
    study: Study,
    entries: list[dict[str, Any]],
    storage_url: str,
    name: str,
    looks: Looks,
    pack: int,
) -> StudySearch:
    """The race's search over the ledger `name`: look 0's entries the ledger lacks enqueued,
    the later looks' as `looks` decides; up to `pack` seeds of a variant per Tune trial."""
    directions = ["minimize" if m == "min" else "maximize" for m in study.spec.modes]
    ledger = optuna.create_study(
        storage=storage_url, study_name=name, directions=directions, load_if_exists=True
    )
    for i in missing(ledger, looks.indices(0)):
        enqueue(ledger, {CONFIRM_INDEX: i})
    sampler = optuna.samplers.RandomSampler(seed=0)  # never consulted: every entry is fixed
    return make_search(
        study, storage_url, name, space=PlanSpace(entries), sampler=sampler,
        num_trials=len(entries), pack=pack,
        packs=partial(VariantPacks, entries=entries), refill=looks,
    )  # fmt: skip
