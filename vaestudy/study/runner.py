"""The study runner: Ray Tune trials, Optuna search, one MLflow parent run per study.

Data flow: study file -> `Study` (validated) -> tracking session (a loopback MLflow server over
the local store, or the given server) -> parent run -> Ray Tune `Tuner` with `StudySearch`
(Optuna, persisted in its storage: `mlflow/optuna.db`, or `--optuna-storage`) -> `run_trial`
(or, with `study.pack`, `run_pack`) in each worker -> the study's answer (`vaestudy.report`:
per-variant feasible counts, the best feasible trial) logged on the parent run -> parent run
finished.

Resume: the parent run carries the Tune experiment path (a local path or a URI such as
`s3://bucket/ray_results/geco`), the Optuna study's name and its storage URL (without a
password) as tags, so a study resumes from any machine and directory given the tracking URI.
`resume=True` picks the study's newest parent run, restores the Tune experiment where Ray saved
its state (`Tuner.restore`, finished trials are not re-run), or else starts only the trials the
Optuna study still lacks. Trials whose attempts all errored (an infrastructure failure, not a
result) do not use up the budget: `--resume` runs them again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from vaestudy import interrupts, server_watch
from vaestudy.dotted import flatten, unprefixed
from vaestudy.errors import UserError
from vaestudy.feasibility import split_names
from vaestudy.report import Report, build_report, log_answer
from vaestudy.stores import (
    lacks_password,
    made_ready,
    optuna_storage_url,
    redacted,
    tracking_session,
    tune_storage_uri,
    uri_child,
    uri_parent,
)
from vaestudy.study import confirm
from vaestudy.study.cluster import check_cluster, check_nodes_reach, start_ray
from vaestudy.study.confirm import LEDGER_SUFFIX
from vaestudy.study.console import StudyProgress, mark, tune_callback
from vaestudy.study.description import study_note
from vaestudy.study.resume import remembered
from vaestudy.study.search import (
    ENDED,
    TUNE_ID,
    StudySearch,
    TrialTeller,
    counts,
    make_search,
    tell,
)
from vaestudy.study.spec import Study
from vaestudy.study.trainables import TrialContext, run_pack, run_trial
from vaestudy.tags import (
    TAG_FAILURE,
    TAG_KIND,
    TAG_NOTE,
    TAG_OPTUNA,
    TAG_OPTUNA_STORAGE,
    TAG_SATURATED,
    TAG_STUDY,
)
from vaestudy.tracking import (
    close_orphans,
    close_study_run,
    ended,
    find_trial_run,
    latest_study_run,
    open_study_run,
    raised,
    reopen_study_run,
    retire_attempt,
    study_experiment,
    study_runs,
    trial_runs,
)

TAG_TUNE_PATH = "vaestudy.tune_path"


@dataclass
class StudyOutcome:
    parent_run_id: str
    run_name: str  # the study run's name: its MLflow run name and its Optuna study's name
    experiment_id: str  # the study's MLflow experiment
    tracking_uri: str
    finished: int
    failed: int  # runs FAILED: diverged (a result) or errored (not one)
    errored: int  # ended in an infrastructure error (not a result): `vaestudy run` exits 1
    interrupted: bool
    report: Report | None  # the study's answer, read back from MLflow (None: no trials)
    to_run: int = 0  # trials the budget still lacks (errored ones do not count)
    causes: tuple[str, ...] = ()  # each errored trial's `vaestudy.failure_reason`

    @property
    def diverged(self) -> int:
        return self.failed - self.errored

    def code_errors(self) -> list[str]:
        """The distinct exceptions errored trials raised (`Type: message`), which running them
        again raises again until their cause is fixed; a process that died is not one."""
        return sorted({e for c in self.causes if (e := raised(c)) is not None})


@dataclass(frozen=True)
class Ledger:
    """The Optuna study that is a study run's ledger of trials (see `vaestudy.study.search`):
    its name and its storage URL (with any password)."""

    name: str
    storage: str

    def load(self) -> optuna.Study | None:
        try:
            return optuna.load_study(study_name=self.name, storage=self.storage)
        except KeyError:
            return None

    def remaining(self, budget: int) -> int:
        """Trials still to run: the `budget` less the trials that count."""
        existing = self.load()
        if existing is None:
            return budget
        done = [t for t in existing.trials if t.state.is_finished() and counts(t)]
        return max(0, budget - len(done))

    def uncounted_failures(self) -> int:
        """Optuna trials closed as FAILED without counting (errored, or cut by a killed driver)."""
        existing = self.load()
        failed = [] if existing is None else existing.get_trials(states=(TrialState.FAIL,))
        return sum(not counts(t) for t in failed)


def _absolute_data_root(study: Study) -> None:
    """Trials run in their own directories: make a relative data root absolute here."""
    root = Path(study.template["data"]["root"])
    if not root.is_absolute():
        study.template["data"]["root"] = str(root.resolve())


def run_study(
    study: Study,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    resume: bool = False,
    storage_path: str | None = None,
    optuna_storage: str | None = None,
    progress: StudyProgress | None = None,
) -> StudyOutcome:
    """Run `study` (see the module doc). Call `vaestudy.preflight.check_study` first: this
    assumes the data, stores and local resources were checked. `storage_path`: Ray Tune's
    storage (`vaestudy.stores.tune_storage_uri`); `optuna_storage`: an Optuna RDB URL
    (`vaestudy.stores.optuna_storage_url`); `progress`: the console's display of the trials
    (`vaestudy.study.console`), if any."""
    _absolute_data_root(study)
    storage = tune_storage_uri(storage_path)
    # Ray starts while the local tracking server starts: both take seconds.
    with tracking_session(tracking_uri, while_starting=lambda: start_ray(address)) as uri:
        check_cluster(study, address)
        client = MlflowClient(uri)
        experiment = study_experiment(client, study.name)
        parent = latest_study_run(client, experiment, study.name) if resume else None
        if resume and parent is None:
            raise UserError(f"--resume: no earlier run of study {study.name!r} at {uri}")
        if parent is not None:  # the run's own Tune storage, wherever this driver runs
            storage = uri_parent(parent.data.tags[TAG_TUNE_PATH])[0]
        check_nodes_reach(uri, storage)
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
        optuna_name = ledger.name
        if progress is not None:
            progress.started(optuna_name, parent_id, redacted(ledger.storage))

        ctx = TrialContext(study, uri, experiment, parent_id)
        gpu = study.spec.resources.gpu
        if gpu and not ray.cluster_resources().get("GPU"):
            print(f"note: the Ray cluster has no GPU; trials run on CPU (study asked gpu={gpu})")
        trainable = _trainable(study, ctx, study.spec.pack)
        grids: list[tune.ResultGrid] = []
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
                settle_orphaned_trials(
                    study, ledger, client, experiment, parent_id, interrupted=True
                )
            uncounted = ledger.uncounted_failures()
            budget = study.spec.num_trials
            if ledger.remaining(budget) > 0:
                client.set_tag(parent_id, TAG_TUNE_PATH, tune_path)
                search = make_search(study, ledger.storage, ledger.name)
                tuner = _new_tuner(study, trainable, search, ledger.remaining(budget), tune_path,
                                   progress)  # fmt: skip
                grids.append(_fit(tuner))
            # Trials that errored in this session do not count; what else is left was never run.
            errored_now = ledger.uncounted_failures() - uncounted
            interrupted = ledger.remaining(budget) > errored_now
            if study.spec.confirm.seeds and not ledger.remaining(budget):
                phase = _Confirmation(study, client, experiment, parent_id, ledger, storage)
                grids += phase.run(ctx, resume, progress)
                interrupted = phase.interrupted()
        except KeyboardInterrupt:
            interrupted = True  # Tune saved its state; --resume continues
        if server_watch.lost():  # nothing can be closed or counted without the server
            raise server_watch.TrackingLost
        mark("trials")
        ended_cleanly = {r.metrics["trial_id"] for g in grids for r in g if _clean(r)}
        orphans = close_orphans(client, experiment, parent_id, ended_cleanly)
        finished, failed, causes = _count_children(client, experiment, parent_id)
        errored = len(causes)
        report = None
        if finished or failed:
            report = build_report(client, study.name, parent_id)
            log_answer(client, report)
        status = "KILLED" if interrupted else "FAILED" if errored else "FINISHED"
        closed = {"vaestudy.orphans_closed": str(orphans)} if orphans else {}
        close_study_run(client, parent_id, status, closed)
        return StudyOutcome(
            parent_id,
            optuna_name,
            experiment,
            uri,
            finished,
            failed,
            errored,
            interrupted,
            report,
            to_run=ledger.remaining(study.spec.num_trials),
            causes=causes,
        )


def resumed_ledger(tags: dict[str, str], optuna_storage: str | None) -> Ledger:
    """The Optuna study a resumed parent run (`tags`) recorded. Its storage is the recorded URL,
    unless that was recorded without its password: then `optuna_storage` (or
    $VAESTUDY_OPTUNA_STORAGE) must give the same URL with it. Runs from before the storage was
    recorded used the local default."""
    recorded = tags.get(TAG_OPTUNA_STORAGE) or optuna_storage_url()
    if not lacks_password(recorded):
        return Ledger(tags[TAG_OPTUNA], recorded)
    given = optuna_storage_url(optuna_storage)
    if redacted(given) != recorded:
        raise UserError(
            f"--resume: the run's Optuna study {tags[TAG_OPTUNA]!r} lives in {recorded}; pass "
            "that URL with its password as --optuna-storage (or $VAESTUDY_OPTUNA_STORAGE)"
        )
    return Ledger(tags[TAG_OPTUNA], given)


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
    """`tuner.fit()`; after a stop signal (`vaestudy.interrupts`: Tune then stopped gracefully
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


def settle_orphaned_trials(
    study: Study,
    ledger: Ledger,
    client: MlflowClient,
    experiment: str,
    parent_id: str,
    interrupted: bool = False,
) -> None:
    """Optuna trials a killed driver left RUNNING: tell Optuna what their MLflow runs hold, as
    the search would have (`TrialTeller`: a finished run's metrics and constraint values, a
    diverged one as the sampler takes divergence). With `interrupted`, the rest (no
    ended run) are closed as FAILED without `vaestudy_ended`, so they do not count and the
    study runs that many trials again; their partial MLflow runs end KILLED with
    `vaestudy.interrupted` (not failures: the report leaves them out of its counts)."""
    ot = ledger.load()
    if ot is None:
        return
    teller = TrialTeller.for_study(study)
    for frozen in ot.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tune_id = frozen.user_attrs.get(TUNE_ID)
        run = find_trial_run(client, experiment, parent_id, tune_id) if tune_id else None
        # FrozenTrial keeps the storage id private (optuna pinned < 6)
        trial = optuna.Trial(ot, frozen._trial_id)
        if run is not None and ended(run):
            trial.set_user_attr(ENDED, True)
            val = None if run.info.status == "FAILED" else unprefixed(run.data.metrics, "val/")
            teller.tell(ot, trial, val, split_names(run.data.tags.get(TAG_SATURATED)))
        elif interrupted:
            tell(ot, trial, state=TrialState.FAIL)
            if run is not None:
                retire_attempt(client, run.info.run_id)


class _Confirmation:
    """The confirmation phase of a study run (`vaestudy.study.confirm`): its plan, its ledger
    (`<run>-confirm` beside the search's) and its Tune experiment."""

    def __init__(
        self,
        study: Study,
        client: MlflowClient,
        experiment: str,
        parent_id: str,
        search_ledger: Ledger,
        storage: str,
    ) -> None:
        self.study, self.client = study, client
        self.experiment, self.parent_id = experiment, parent_id
        self.ledger = Ledger(search_ledger.name + LEDGER_SUFFIX, search_ledger.storage)
        searched = search_ledger.load()
        assert searched is not None  # the search ran
        report = build_report(client, study.name, parent_id)
        self.entries = confirm.plan(study, report, client, searched)
        self.storage = storage
        self.uncounted = 0

    def left(self) -> int:
        return self.ledger.remaining(len(self.entries))

    def interrupted(self) -> bool:
        """Runs are left that did not error in this session (those run again on --resume)."""
        return self.left() > self.ledger.uncounted_failures() - self.uncounted

    def run(
        self, ctx: TrialContext, resume: bool, progress: StudyProgress | None
    ) -> list[tune.ResultGrid]:
        """Run the plan's entries the ledger lacks (after settling a killed driver's)."""
        if resume:
            settle_orphaned_trials(self.study, self.ledger, self.client, self.experiment,
                                   self.parent_id, interrupted=True)  # fmt: skip
        self.uncounted = self.ledger.uncounted_failures()
        if not self.left():
            return []
        search = confirm.make_confirm_search(self.study, self.entries, self.ledger.storage,
                                             self.ledger.name)  # fmt: skip
        trainable = _trainable(self.study, ctx, pack=1)
        tune_path = f"{uri_child(self.storage, self.ledger.name)}-{_now()}"
        tuner = _new_tuner(self.study, trainable, search, self.left(), tune_path, progress,
                           scheduler=False)  # fmt: skip
        return [_fit(tuner)]


def _trainable(study: Study, ctx: TrialContext, pack: int):
    """The Tune trainable of one trial (or a pack) with the study's resources."""
    gpu = study.spec.resources.gpu
    if gpu and not ray.cluster_resources().get("GPU"):
        gpu = 0
    train = run_pack if pack > 1 else run_trial
    return tune.with_resources(
        tune.with_parameters(train, ctx=ctx), {"cpu": study.spec.resources.cpu, "gpu": gpu}
    )


def _new_tuner(
    study: Study,
    trainable,
    search: StudySearch,
    num_samples: int,
    tune_path: str,
    progress: StudyProgress | None = None,
    scheduler: bool = True,
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


def _count_children(
    client: MlflowClient, experiment: str, parent_id: str
) -> tuple[int, int, tuple[str, ...]]:
    """The study's trial runs: finished, failed (diverged or errored), and the reasons of the
    errored ones (they did not reach their own end: an error, not a result)."""
    runs = trial_runs(client, client.get_run(parent_id))
    finished = sum(r.info.status == "FINISHED" for r in runs)
    failed = sum(r.info.status == "FAILED" for r in runs)
    errored = [r for r in runs if r.info.status == "FAILED" and not ended(r)]
    return finished, failed, tuple(r.data.tags.get(TAG_FAILURE, "") for r in errored)
