"""The outcome stage of a study run: close what the trials left open, count them, write the
answer on the parent run and close it.

Counts: finished, failed (diverged: a result; errored: an infrastructure failure, not one) and
each errored trial's reason. The answer (`vaestudy.report.tables`: per-variant feasible counts, the
best feasible trial, the confirmation's verdict) is read back from MLflow and logged on the
parent run, which ends FINISHED, FAILED (a trial errored) or KILLED (interrupted); the runs
that decided it are saved as a view of the experiment page (`vaestudy.report.comparison`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaestudy.report.comparison import share_comparison
from vaestudy.report.tables import Report, build_report, log_answer
from vaestudy.study import server_watch
from vaestudy.study.spec import Study
from vaestudy.tracking.runs import close_orphans, close_study_run, ended, raised, trial_runs
from vaestudy.tracking.tags import TAG_FAILURE

if TYPE_CHECKING:
    from vaestudy.study.session import Session
    from vaestudy.study.tuner import Tuned


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


def conclude(study: Study, session: Session, tuned: Tuned) -> StudyOutcome:
    """The outcome stage (see the module doc); `server_watch.TrackingLost` when the tracking
    server went silent during the study (nothing can be closed or counted without it)."""
    if server_watch.lost():
        raise server_watch.TrackingLost
    client, parent_id = session.client, tuned.parent_run_id
    orphans = close_orphans(
        client, tuned.experiment_id, parent_id, tuned.ended_cleanly, tuned.stopped
    )
    finished, failed, causes = _count_children(client, tuned.experiment_id, parent_id)
    report = None
    if finished or failed:
        report = build_report(session.reader, study.name, parent_id)
        log_answer(client, report)
        try:  # a view in the UI: nothing of the study's results depends on it
            share_comparison(session.reader, client, report)
        except MlflowException as exc:
            print(f"vaestudy: the UI view of the runs that decided it was not saved ({exc}); "
                  f"vaestudy ui {study.name} --compare saves it", file=sys.stderr)  # fmt: skip
    errored = len(causes)
    status = "KILLED" if tuned.interrupted else "FAILED" if errored else "FINISHED"
    closed = {"vaestudy.orphans_closed": str(orphans)} if orphans else {}
    close_study_run(client, parent_id, status, closed)
    return StudyOutcome(
        parent_id,
        tuned.run_name,
        tuned.experiment_id,
        session.uri,
        finished,
        failed,
        errored,
        tuned.interrupted,
        report,
        to_run=tuned.ledger.remaining(study.spec.num_trials),
        causes=causes,
    )


def _count_children(
    client: MlflowClient, experiment: str, parent_id: str
) -> tuple[int, int, tuple[str, ...]]:
    """The study's trial runs: finished, failed (diverged or errored), and the reasons of the
    errored ones (they did not reach their own end: an error, not a result)."""
    runs = trial_runs(client, experiment, parent_id)
    finished = sum(r.info.status == "FINISHED" for r in runs)
    failed = sum(r.info.status == "FAILED" for r in runs)
    errored = [r for r in runs if r.info.status == "FAILED" and not ended(r)]
    return finished, failed, tuple(r.data.tags.get(TAG_FAILURE, "") for r in errored)
