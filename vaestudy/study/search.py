"""The Optuna side of a study: the define-by-run search space, samplers, and `StudySearch`.

`StudySearch` is Ray Tune's `OptunaSearch` with these changes:

- a trial that reports `vaestudy/diverged` is told to Optuna as FAILED instead of COMPLETE, so a
  diverged trial never counts as a (fake) objective value and never stays RUNNING;
- results of a trial Optuna already recorded as finished (replayed by Tune after a restore) are
  ignored;
- the Optuna study is the ledger of the study's trial budget: each Optuna trial records its Tune
  trial id (`tune_trial_id`) and, when Tune ends it, `vaestudy_ended`; `suggest` stops once the
  study holds `num_trials` trials that count (`counts`). Trials a killed driver left RUNNING are
  settled from MLflow on `--resume` (`runner.settle_orphaned_trials`).

`PackSearch` proposes `pack` Optuna trials per Tune trial (config `{"members": [...]}`) and
tells each its own result, read from the pack's report under `member<i>/`. Each member has the
key `<tune trial id>/<i>`, which is also its Optuna `tune_trial_id` and its MLflow run's trial
tag, so the ledger and the resume settling treat members exactly like single trials.

This reads OptunaSearch's private `_ot_trials`, `_ot_study` and `_completed_trials`; ray is pinned
to 2.60.0 and `tests/test_study.py` covers it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from vaestudy.study.spec import Choice, IntRange, LogUniform, SamplerSpec, Study, Uniform
from vaestudy.tracking import unprefixed

DIVERGED = "vaestudy/diverged"


def _is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def choice_label(index: int, value: Any) -> Any:
    """What Optuna sees for a choice: the value itself if primitive, else a readable label."""
    if _is_primitive(value):
        return value
    if isinstance(value, dict) and "name" in value:
        return f"{index}:{value['name']}"
    return f"{index}"


class SearchSpace:
    """Define-by-run space (a picklable callable): suggests every distribution of the study."""

    def __init__(self, study: Study) -> None:
        self.distributions = study.distributions

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, Uniform):
                trial.suggest_float(key, *dist.uniform)
            elif isinstance(dist, LogUniform):
                trial.suggest_float(key, *dist.loguniform, log=True)
            elif isinstance(dist, IntRange):
                trial.suggest_int(key, *dist.int, step=dist.step)
            elif isinstance(dist, Choice):
                labels = [choice_label(i, v) for i, v in enumerate(dist.choice)]
                label = trial.suggest_categorical(key, labels)
                resolved[key] = dist.choice[labels.index(label)]
        return resolved


def make_sampler(spec: SamplerSpec) -> optuna.samplers.BaseSampler:
    seed = spec.seed
    if spec.kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if spec.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.BruteForceSampler(seed=seed)


TUNE_ID = "tune_trial_id"
ENDED = "vaestudy_ended"


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether an Optuna trial uses up one of the study's trials: all but the FAILED ones that
    Tune never ended (left behind by a killed driver, to be run again)."""
    return trial.state != TrialState.FAIL or bool(trial.user_attrs.get(ENDED))


class StudySearch(OptunaSearch):
    def __init__(self, *args: Any, num_trials: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_trials = num_trials

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials:
            used = sum(counts(t) for t in self._ot_study.get_trials(deepcopy=False))
            if used >= self.num_trials:
                return Searcher.FINISHED
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            self._ot_trials[trial_id].set_user_attr(TUNE_ID, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # After a restore, Tune may replay a trial that Optuna already recorded as finished.
        with contextlib.suppress(UpdateFinishedTrialError):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return  # replayed by Tune after a restore
        if trial_id in self._ot_trials:
            with contextlib.suppress(UpdateFinishedTrialError):
                self._ot_trials[trial_id].set_user_attr(ENDED, True)
        if result and result.get(DIVERGED):
            with contextlib.suppress(UpdateFinishedTrialError, ValueError):
                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


def member_key(trial_id: str, index: int) -> str:
    """The key of a packed trial's `index`-th member: Optuna's and MLflow's trial id."""
    return f"{trial_id}/{index}"


def member_prefix(index: int) -> str:
    """Where a pack's report holds member `index`'s metrics."""
    return f"member{index}/"


class PackSearch(StudySearch):
    """Up to `pack` Optuna trials per Tune trial, each told its own result (see module doc)."""

    def __init__(self, *args: Any, pack: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pack = pack
        self._members: dict[str, list[str]] = {}

    def suggest(self, trial_id: str) -> dict | None:
        configs = []
        for i in range(self.pack):
            config = super().suggest(member_key(trial_id, i))
            if not isinstance(config, dict):
                break
            configs.append(config)
        if not configs:
            return Searcher.FINISHED
        self._members[trial_id] = [member_key(trial_id, i) for i in range(len(configs))]
        return {"members": configs}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # members are told only their final results (no pruning for packs)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        for i, key in enumerate(self._members.get(trial_id, [])):
            own = unprefixed(result or {}, member_prefix(i))
            super().on_trial_complete(key, own or None, error or not own)


def make_search(study: Study, storage_url: str, study_name: str) -> StudySearch:
    spec = study.spec
    multi = len(spec.metrics) > 1
    common: dict[str, Any] = {
        "space": SearchSpace(study),
        "metric": spec.metrics if multi else spec.metrics[0],
        "mode": spec.modes if multi else spec.modes[0],
        "sampler": make_sampler(spec.sampler),
        "study_name": study_name,
        "storage": optuna.storages.RDBStorage(storage_url),
        "num_trials": spec.num_trials,
    }
    if spec.pack > 1:
        return PackSearch(**common, pack=spec.pack)
    return StudySearch(**common)
