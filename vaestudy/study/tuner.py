"""The tuner stage of a study run: its parent run, its Ray Tune experiment searched by Optuna,
and its confirmation phase.

`tune_study` opens the study's MLflow parent run (or reopens the newest one to resume it), then
runs a Ray Tune `Tuner` with `StudySearch` (Optuna, persisted in its storage: the run's ledger,
`vaestudy.study.ledger`) and, with `study.stop_hopeless`, the `HopelessStopper` (a restored
experiment keeps the stopper it was started with) over `run_trial` (or, with `study.pack`,
`run_pack`) in each worker,
then the confirmation runs (`vaestudy.study.confirm`). It returns what the outcome stage counts
(`Tuned`); Ctrl-C and stop signals end it early with its state saved.

Resume: the parent run carries the Tune experiment path (a local path or a URI such as
`s3://bucket/ray_results/geco`), the Optuna study's name and its storage URL (without a
password) as tags, so a study resumes from any machine and directory given the tracking URI.
`resume=True` picks the study's newest parent run, restores the Tune experiment where Ray saved
its state (`Tuner.restore`, finished trials are not re-run), or else starts only the trials the
Optuna study still lacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from vaestudy.config.dotted import flatten
from vaestudy.errors import UserError
from vaestudy.report.tables import build_report
from vaestudy.study import confirm, interrupts
from vaestudy.study.cluster import check_nodes_reach
from vaestudy.study.console import StudyProgress, mark, tune_callback
from vaestudy.study.description import study_note
from vaestudy.study.hopeless import HopelessStopper
from vaestudy.study.ledger import Ledger, resumed_ledger, settle_orphaned_trials
from vaestudy.study.resume import remembered
from vaestudy.study.search import StudySearch, make_search
from vaestudy.study.session import Session
from vaestudy.study.spec import Study
from vaestudy.study.trainables import TrialContext, run_pack, run_trial
from vaestudy.tracking.runs import (
    latest_study_run,
    open_study_run,
    reopen_study_run,
    study_experiment,
    study_runs,
    tag_run,
)
from vaestudy.tracking.stores import made_ready, optuna_storage_url, redacted, uri_child, uri_parent
from vaestudy.tracking.tags import (
    TAG_KIND,
    TAG_NOTE,
    TAG_OPTUNA,
    TAG_OPTUNA_STORAGE,
    TAG_STUDY,
    TAG_TUNE_PATH,
)


@dataclass
class Tuned:
    """What the tuner stage leaves to the outcome stage (`vaestudy.study.outcome`)."""

    parent_run_id: str
    run_name: str  # the study run's name: its MLflow run name and its Optuna study's name
    experiment_id: str  # the study's MLflow experiment
    ledger: Ledger  # the search's
    interrupted: bool  # trials are left that did not error in this session
    ended_cleanly: set[str]  # Tune trial ids that ended without error
    stopped: dict[str, str]  # trial ids (pack members': theirs) stopped as hopeless -> why


def tune_study(
    study: Study,
    session: Session,
    *,
    resume: bool = False,
    optuna_storage: str | None = None,
    progress: StudyProgress | None = None,
) -> Tuned:
    """The tuner stage of a run of `study` in `session` (see the module doc). `optuna_storage`:
    an Optuna RDB URL (`vaestudy.tracking.stores.optuna_storage_url`); `progress`: the console's
    display of the trials (`vaestudy.study.console`), if any."""
    _absolute_data_root(study)
    client, storage = session.client, session.storage
    experiment = study_experiment(client, study.name)
    parent = latest_study_run(client, experiment, study.name) if resume else None
    if resume and parent is None:
        raise UserError(f"--resume: no earlier run of study {study.name!r} at {session.uri}")
    if parent is not None:  # the run's own Tune storage, wherever this driver runs
        storage = uri_parent(parent.data.tags[TAG_TUNE_PATH])[0]
    check_nodes_reach(session.uri, storage)
    if parent is None:
        ledger_url = made_ready(optuna_storage_url(optuna_storage))
        ledger = Ledger(_free_run_name(study, client, experiment, ledger_url), ledger_url)
        tune_path = uri_child(storage, ledger.name)
        if "://" not in tune_path and Path(tune_path).exists():  # a store that is gone
            tune_path = f"{tune_path}-{_now()}"  # never mix two runs' Tune state
        tags = {
            TAG_KIND: "study",
            TAG_STUDY: study.name,
            TAG_OPTUNA: ledger.name,
            TAG_OPTUNA_STORAGE: redacted(ledger.storage),
            TAG_TUNE_PATH: tune_path,
            TAG_NOTE: study_note(study, ledger.name, redacted(ledger.storage)),
            **remembered(study),
        }
        params = flatten(study.spec.model_dump(mode="json"), "study")
        parent_id = open_study_run(client, experiment, ledger.name, tags, params)
    else:
        parent_id = parent.info.run_id
        ledger = resumed_ledger(parent.data.tags, optuna_storage)
        tune_path = parent.data.tags[TAG_TUNE_PATH]
        reopen_study_run(client, parent_id)
    if progress is not None:
        progress.started(ledger.name, parent_id, redacted(ledger.storage))

    ctx = TrialContext(study, session.uri, experiment, parent_id)
    trainable = _trainable(study, ctx, study.spec.pack)
    grids: list[tune.ResultGrid] = []
    stopper = HopelessStopper(study) if study.spec.stop_hopeless is not None else None
    hopeless = stopper.stopped if stopper else {}  # trial id -> why the stopper stopped it
    uncounted = ledger.uncounted_failures()
    try:
        if resume:  # trials that ended after the killed driver's last word to Optuna
            settle_orphaned_trials(study, ledger, client, experiment, parent_id)
        if resume and tune.Tuner.can_restore(tune_path):
            # Finish the trials the interrupted experiment had started (from checkpoints).
            tuner = tune.Tuner.restore(tune_path, trainable, resume_errored=True)
            grids.append(_fit(tuner))
            tune_path = f"{tune_path}-resumed-{_now()}"
        if resume:  # what neither MLflow nor the restore finished is run again
            settle_orphaned_trials(study, ledger, client, experiment, parent_id, interrupted=True)
        uncounted = ledger.uncounted_failures()
        budget = study.spec.num_trials
        if ledger.remaining(budget) > 0:
            tag_run(client, parent_id, {TAG_TUNE_PATH: tune_path})
            search = make_search(study, ledger.storage, ledger.name, stopped=hopeless)
            tuner = _new_tuner(study, trainable, search, ledger.remaining(budget), tune_path,
                               progress, stopper=stopper)  # fmt: skip
            grids.append(_fit(tuner))
        # Trials that errored in this session do not count; what else is left was never run.
        errored_now = ledger.uncounted_failures() - uncounted
        interrupted = ledger.remaining(budget) > errored_now
        if study.spec.confirm.seeds and not ledger.remaining(budget):
            phase = _Confirmation(study, session, experiment, parent_id, ledger, storage)
            grids += phase.run(ctx, resume, progress)
            interrupted = False  # a stop signal raised; errored runs are counted as such
    except KeyboardInterrupt:
        interrupted = True  # Tune saved its state; --resume continues
    mark("trials")
    ended_cleanly = {r.metrics["trial_id"] for g in grids for r in g if _clean(r)}
    return Tuned(parent_id, ledger.name, experiment, ledger, interrupted, ended_cleanly, hopeless)


def _absolute_data_root(study: Study) -> None:
    """Trials run in their own directories: make a relative data root absolute here."""
    root = Path(study.template["data"]["root"])
    if not root.is_absolute():
        study.template["data"]["root"] = str(root.resolve())


def _free_run_name(study: Study, client: MlflowClient, experiment: str, storage: str) -> str:
    """A name for a new run of `study`, free in the Optuna storage and among the study's runs:
    the study's name for its first run, then `<name>-2`, `<name>-3`, ... It names the parent run
    and the Optuna study, so `optuna.load_study(study_name=...)` finds it by the study's name."""
    taken = set(optuna.get_all_study_names(storage))
    taken |= {run.data.tags.get(TAG_OPTUNA) for run in study_runs(client, experiment, study.name)}
    name, n = study.name, 1
    while name in taken:
        n += 1
        name = f"{study.name}-{n}"
    return name


def _fit(tuner: tune.Tuner) -> tune.ResultGrid:
    """`tuner.fit()`; after a stop signal (`vaestudy.study.interrupts`: Tune then stopped gracefully
    and saved its state) KeyboardInterrupt, so the runner starts nothing new."""
    with interrupts.tune_running():
        grid = tuner.fit()
    if interrupts.requested():
        raise KeyboardInterrupt
    return grid


def _clean(result: tune.Result) -> bool:
    """A Tune trial that ended without error (stopped early, if its run was left unclosed)."""
    return result.error is None and "trial_id" in result.metrics


def _now() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class _Confirmation:
    """The confirmation phase of a study run (`vaestudy.study.confirm`): its plan, its ledger
    (`<run>-confirm` beside the search's) and its Tune experiment, in which the race's looks
    follow one another."""

    def __init__(
        self,
        study: Study,
        session: Session,
        experiment: str,
        parent_id: str,
        search_ledger: Ledger,
        storage: str,
    ) -> None:
        self.study, self.session, self.client = study, session, session.client
        self.experiment, self.parent_id = experiment, parent_id
        self.ledger = Ledger(search_ledger.name + confirm.LEDGER_SUFFIX, search_ledger.storage)
        searched = search_ledger.load()
        assert searched is not None  # the search ran
        report = build_report(session.reader, study.name, parent_id)
        self.entries = confirm.plan(study, report, self.client, searched)
        self.storage = storage

    def run(
        self, ctx: TrialContext, resume: bool, progress: StudyProgress | None
    ) -> list[tune.ResultGrid]:
        """The race, from where the ledger stands (after settling a killed driver's runs)."""
        if resume:
            settle_orphaned_trials(self.study, self.ledger, self.client, self.experiment,
                                   self.parent_id, interrupted=True)  # fmt: skip
        looks = confirm.Looks(self.study, self.entries, self.session.reader, self.parent_id)
        pack = confirm.pack_size(self.study, self.entries)
        search = confirm.make_confirm_search(self.study, self.entries, self.ledger.storage,
                                             self.ledger.name, looks, pack)  # fmt: skip
        trainable = _trainable(self.study, ctx, pack)
        tune_path = f"{uri_child(self.storage, self.ledger.name)}-{_now()}"
        tuner = _new_tuner(self.study, trainable, search, len(self.entries), tune_path, progress,
                           scheduler=False)  # fmt: skip
        return [_fit(tuner)]


def _trainable(study: Study, ctx: TrialContext, pack: int):
    """The Tune trainable of one trial (or a pack) with the study's resources, as asked: a
    GPU request is never dropped (a study asking for GPUs where there are none is refused
    before it starts), and a trial trains on a GPU exactly when it got one (`trial.placed`)."""
    train = run_pack if pack > 1 else run_trial
    resources = study.spec.resources
    return tune.with_resources(
        tune.with_parameters(train, ctx=ctx), {"cpu": resources.cpu, "gpu": resources.gpu}
    )


def _new_tuner(
    study: Study,
    trainable,
    search: StudySearch,
    num_samples: int,
    tune_path: str,
    progress: StudyProgress | None = None,
    scheduler: bool = True,
    stopper: HopelessStopper | None = None,
) -> tune.Tuner:
    spec = study.spec
    asha = None
    if scheduler and spec.scheduler is not None:
        asha = ASHAScheduler(
            metric=spec.metrics[0],
            mode=spec.modes[0],
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=asha,
            num_samples=num_samples,
            max_concurrent_trials=spec.max_concurrent,
            # A worker process runs trial after trial: torch and friends are imported once.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=uri_parent(tune_path)[1],
            storage_path=uri_parent(tune_path)[0],
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            stop=stopper,
            **_checkpoint_keeping(study, tune_path),
            callbacks=[tune_callback(progress)] if progress else None,
            verbose=0 if progress else 1,
        ),
    )


STATE_SYNC_S = 10  # how often the driver uploads Tune's experiment state to remote storage


def _checkpoint_keeping(study: Study, tune_path: str) -> dict[str, Any]:
    """How many checkpoints a trial keeps, and how often the experiment state is saved. On local
    storage Tune writes its experiment state in place and one checkpoint suffices. On remote
    storage (`s3://...`) the driver uploads the state only every `sync_period` (Tune's default:
    300 s), so a restored state may name a checkpoint up to that old: trials keep every
    checkpoint of the last three upload periods (measured: with one kept, a driver killed
    mid-study restored trials whose named checkpoint had been deleted)."""
    if "://" not in tune_path:
        return {"checkpoint_config": tune.CheckpointConfig(num_to_keep=1)}
    interval = max(study.spec.checkpoint_interval_s, 1.0)
    keep = 1 + math.ceil(3 * STATE_SYNC_S / interval)
    return {
        "checkpoint_config": tune.CheckpointConfig(num_to_keep=keep),
        "sync_config": tune.SyncConfig(sync_period=STATE_SYNC_S),
    }
