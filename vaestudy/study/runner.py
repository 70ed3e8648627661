"""A study run, stage by stage; `vaestudy run` calls the same stages in this order.

1. preflight (`vaestudy.study.preflight.check_study`, before anything starts: the caller's);
2. session (`vaestudy.study.session`): the tracking server, Ray and MLflow's client, started
   once by `open_session` and stopped by it;
3. tuner (`vaestudy.study.tuner`): the parent run, Ray Tune trials searched by Optuna (its
   ledger: `vaestudy.study.ledger`), the confirmation runs;
4. outcome (`vaestudy.study.outcome`): orphans closed, trials counted, the answer
   (`vaestudy.report.tables`) on the parent run, the run closed.
"""

from __future__ import annotations

from vaestudy.study.console import StudyProgress
from vaestudy.study.outcome import StudyOutcome, conclude
from vaestudy.study.session import open_session
from vaestudy.study.spec import Study
from vaestudy.study.tuner import tune_study


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
    """Run `study`: session, tuner, outcome (see the module doc). Call
    `vaestudy.study.preflight.check_study` first: this assumes the data, stores and local resources
    were checked. `storage_path`: Ray Tune's storage (`vaestudy.tracking.stores.tune_storage_uri`);
    `optuna_storage`: an Optuna RDB URL (`vaestudy.tracking.stores.optuna_storage_url`); `progress`:
    the console's display of the trials (`vaestudy.study.console`), if any."""
    with open_session(study, tracking_uri, address, storage_path) as session:
        tuned = tune_study(
            study, session, resume=resume, optuna_storage=optuna_storage, progress=progress
        )
        return conclude(study, session, tuned)
