"""A study run's ledger: the Optuna study that records its trials (see `vaestudy.study.search`),
and what a killed driver left in it.

Trials whose attempts all errored (an infrastructure failure, not a result) do not count
(`counts`): `--resume` runs them again. A resumed run settles first the Optuna trials a killed
driver left RUNNING, from what their MLflow runs hold (`settle_orphaned_trials`).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from vaestudy.config.dotted import unprefixed
from vaestudy.errors import UserError
from vaestudy.study.search import ENDED, TUNE_ID, TrialTeller, counts, live_trial, tell
from vaestudy.study.spec import Study
from vaestudy.tracking.runs import ended, find_trial_run, retire_attempt
from vaestudy.tracking.stores import lacks_password, optuna_storage_url, redacted
from vaestudy.tracking.tags import TAG_OPTUNA, TAG_OPTUNA_STORAGE, TAG_SATURATED
from vaestudy.training.feasibility import split_names


@dataclass(frozen=True)
class Ledger:
    """The Optuna study that is a study run's ledger of trials (see `vaestudy.study.search`):
    its name and its storage URL (with any password)."""

    name: str
    storage: str

    def load(self, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study | None:
        """The Optuna study (None if it does not exist yet), through `storage` if given."""
        try:
            return optuna.load_study(study_name=self.name, storage=storage or self.storage)
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
    storage = optuna.storages.RDBStorage(ledger.storage)
    ot = ledger.load(storage)
    if ot is None:
        return
    teller = TrialTeller.for_study(study)
    for frozen in ot.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tune_id = frozen.user_attrs.get(TUNE_ID)
        run = find_trial_run(client, experiment, parent_id, tune_id) if tune_id else None
        trial = live_trial(ot, storage, frozen.number)
        if run is not None and ended(run):
            trial.set_user_attr(ENDED, True)
            val = None if run.info.status == "FAILED" else unprefixed(run.data.metrics, "val/")
            teller.tell(ot, trial, val, split_names(run.data.tags.get(TAG_SATURATED)))
        elif interrupted:
            tell(ot, trial, state=TrialState.FAIL)
            if run is not None:
                retire_attempt(client, run.info.run_id)
