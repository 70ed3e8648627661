"""The study runner: Ray Tune trials, Optuna search, one MLflow parent run per study.

Data flow: study file -> `Study` (validated) -> tracking session (a loopback MLflow server over
the local store, or the given server) -> parent run -> Ray Tune `Tuner` with `StudySearch`
(Optuna, persisted in `mlflow/optuna.db`) -> `run_trial` (or, with `study.pack`, `run_pack`)
in each worker -> the study's answer (`vaestudy.report`: per-variant feasible counts, the best
feasible trial) logged on the parent run -> parent run finished.

Resume: the parent run carries the Tune experiment path and the Optuna study name as tags.
`resume=True` picks the study's newest parent run, restores the Tune experiment where Ray saved
its state (`Tuner.restore`, finished trials are not re-run), or else starts only the trials the
Optuna study still lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from vaestudy.dotted import flatten, unprefixed
from vaestudy.errors import UserError
from vaestudy.feasibility import split_names
from vaestudy.report import Report, build_report, log_answer
from vaestudy.stores import TUNE_STORAGE, optuna_storage_url, redacted, tracking_session
from vaestudy.study.cluster import check_cluster, start_ray
from vaestudy.study.console import StudyProgress, mark, tune_callback
from vaestudy.study.description import study_note
from vaestudy.study.resume import remembered
from vaestudy.study.search import ENDED, TUNE_ID, TrialTeller, counts, make_search, tell
from vaestudy.study.spec import Study
from vaestudy.study.trainables import TrialContext, run_pack, run_trial
from vaestudy.tracking import (
    TAG_FAILURE,
    TAG_INTERRUPTED,
    TAG_KIND,
    TAG_NOTE,
    TAG_OPTUNA,
    TAG_OPTUNA_STORAGE,
    TAG_SATURATED,
    TAG_STUDY,
    close_orphans,
    ended,
    find_trial_run,
    latest_study_run,
    log_params,
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
    failed: int  # diverged or errored
    errored: int  # ended in an infrastructure error (not a result): `vaestudy run` exits 1
    interrupted: bool
    report: Report | None  # the study's answer, read back from MLflow (None: no trials)


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
    progress: StudyProgress | None = None,
) -> StudyOutcome:
    """Run `study` (see the module doc). Call `vaestudy.preflight.check_study` first: this
    assumes the data, stores and local resources were checked. `progress`: the console's
    display of the trials (`vaestudy.study.console`), if any."""
    _absolute_data_root(study)
    storage = Path(storage_path or TUNE_STORAGE).resolve()
    # Ray starts while the local tracking server starts: both take seconds.
    with tracking_session(tracking_uri, while_starting=lambda: start_ray(address)) as uri:
        check_cluster(study, address)
        client = MlflowClient(uri)
        experiment = study_experiment(client, study.name)
        parent = latest_study_run(client, experiment, study.name) if resume else None
        if resume and parent is None:
            raise UserError(f"--resume: no earlier run of study {study.name!r} at {uri}")
        if parent is None:
            optuna_name = _free_run_name(study, client, experiment)
            tune_path = storage / optuna_name
            if tune_path.exists():  # left by a store that is gone: never mix two runs' state
                tune_path = tune_path.with_name(f"{optuna_name}-{_now()}")
            storage_url = redacted(optuna_storage_url())
            tags = {
                TAG_KIND: "study",
                TAG_STUDY: study.name,
                TAG_OPTUNA: optuna_name,
                TAG_OPTUNA_STORAGE: storage_url,
                TAG_TUNE_PATH: str(tune_path),
                TAG_NOTE: study_note(study, optuna_name, storage_url),
                **remembered(study),
            }
            run = client.create_run(experiment, run_name=optuna_name, tags=tags)
            parent_id = run.info.run_id
            log_params(client, parent_id, flatten(study.spec.model_dump(mode="json"), "study"))
        else:
            parent_id = parent.info.run_id
            optuna_name = parent.data.tags[TAG_OPTUNA]
            tune_path = Path(parent.data.tags[TAG_TUNE_PATH])
            client.update_run(parent_id, status="RUNNING")
        if progress is not None:
            progress.started(optuna_name, parent_id, optuna_storage_url())

        ctx = TrialContext(study, uri, experiment, parent_id)
        gpu = study.spec.resources.gpu
        if gpu and not ray.cluster_resources().get("GPU"):
            print(f"note: the Ray cluster has no GPU; trials run on CPU (study asked gpu={gpu})")
            gpu = 0
        train = run_pack if study.spec.pack > 1 else run_trial
        trainable = tune.with_resources(
            tune.with_parameters(train, ctx=ctx), {"cpu": study.spec.resources.cpu, "gpu": gpu}
        )
        grids: list[tune.ResultGrid] = []
        try:
            if resume:  # trials that ended after the killed driver's last word to Optuna
                settle_orphaned_trials(study, optuna_name, client, experiment, parent_id)
            if resume and tune.Tuner.can_restore(str(tune_path)):
                # Finish the trials the interrupted experiment had started (from checkpoints).
                tuner = tune.Tuner.restore(str(tune_path), trainable, resume_errored=True)
                grids.append(tuner.fit())
                tune_path = tune_path.with_name(f"{tune_path.name}-resumed-{_now()}")
            if resume:  # what neither MLflow nor the restore finished is run again
                settle_orphaned_trials(
                    study, optuna_name, client, experiment, parent_id, interrupted=True
                )
            if _remaining_trials(study, optuna_name) > 0:
                client.set_tag(parent_id, TAG_TUNE_PATH, str(tune_path))
                tuner = _new_tuner(study, trainable, optuna_name, tune_path, progress)
                grids.append(tuner.fit())
        except KeyboardInterrupt:
            pass  # Tune saved its state; the checks below record what is left to do
        mark("trials")
        interrupted = _remaining_trials(study, optuna_name) > 0
        ended_cleanly = {r.metrics["trial_id"] for g in grids for r in g if _clean(r)}
        orphans = close_orphans(client, experiment, parent_id, ended_cleanly)
        finished, failed, errored = _count_children(client, experiment, parent_id)
        if orphans:
            client.set_tag(parent_id, "vaestudy.orphans_closed", str(orphans))
        report = None
        if finished or failed:
            report = build_report(client, study.name, parent_id)
            log_answer(client, report)
        status = "KILLED" if interrupted else "FAILED" if errored else "FINISHED"
        client.set_terminated(parent_id, status=status)
        return StudyOutcome(
            parent_id, optuna_name, experiment, uri, finished, failed, errored, interrupted, report
        )


def _free_run_name(study: Study, client: MlflowClient, experiment: str) -> str:
    """A name for a new run of `study`, free in the Optuna storage and among the study's runs:
    the study's name for its first run, then `<name>-2`, `<name>-3`, ... It names the parent run
    and the Optuna study, so `optuna.load_study(study_name=...)` finds it by the study's name."""
    taken = set(optuna.get_all_study_names(optuna_storage_url()))
    taken |= {run.data.tags.get(TAG_OPTUNA) for run in study_runs(client, experiment, study.name)}
    name, n = study.name, 1
    while name in taken:
        n += 1
        name = f"{study.name}-{n}"
    return name


def _clean(result: tune.Result) -> bool:
    """A Tune trial that ended without error (stopped early, if its run was left unclosed)."""
    return result.error is None and "trial_id" in result.metrics


def _now() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _load_optuna(optuna_name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=optuna_name, storage=optuna_storage_url())
    except KeyError:
        return None


def _remaining_trials(study: Study, optuna_name: str) -> int:
    existing = _load_optuna(optuna_name)
    if existing is None:
        return study.spec.num_trials
    done = [t for t in existing.trials if t.state.is_finished() and counts(t)]
    return max(0, study.spec.num_trials - len(done))


def settle_orphaned_trials(
    study: Study,
    optuna_name: str,
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
    ot = _load_optuna(optuna_name)
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
            test = None if run.info.status == "FAILED" else unprefixed(run.data.metrics, "test/")
            teller.tell(ot, trial, test, split_names(run.data.tags.get(TAG_SATURATED)))
        elif interrupted:
            tell(ot, trial, state=TrialState.FAIL)
            if run is not None:
                client.set_tag(run.info.run_id, TAG_INTERRUPTED, "run again as a new trial")
                client.set_terminated(run.info.run_id, status="KILLED")


def _new_tuner(
    study: Study,
    trainable,
    optuna_name: str,
    tune_path: Path,
    progress: StudyProgress | None = None,
) -> tune.Tuner:
    spec = study.spec
    search = make_search(study, optuna_storage_url(), optuna_name)
    scheduler = None
    if spec.scheduler is not None:
        scheduler = ASHAScheduler(
            metric=spec.metrics[0],
            mode=spec.modes[0],
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler,
            num_samples=_remaining_trials(study, optuna_name),
            max_concurrent_trials=spec.max_concurrent,
            # A worker process runs trial after trial: torch and friends are imported once.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=tune_path.name,
            storage_path=str(tune_path.parent),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[tune_callback(progress)] if progress else None,
            verbose=0 if progress else 1,
        ),
    )


def _count_children(client: MlflowClient, experiment: str, parent_id: str) -> tuple[int, int, int]:
    """The study's trial runs: finished, failed (diverged or errored), errored (did not reach
    their own end: an infrastructure failure, not a result)."""
    runs = trial_runs(client, client.get_run(parent_id))
    finished = sum(r.info.status == "FINISHED" for r in runs)
    failed = sum(r.info.status == "FAILED" or TAG_FAILURE in r.data.tags for r in runs)
    errored = sum(r.info.status == "FAILED" and not ended(r) for r in runs)
    return finished, failed, errored
