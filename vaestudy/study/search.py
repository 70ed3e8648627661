"""The Optuna side of a study: the define-by-run search space, samplers, and `StudySearch`.

`StudySearch` is Ray Tune's `OptunaSearch` with these changes:

- every trial that reached its own end (its final report carries `vaestudy/diverged`) is told
  by `TrialTeller`: its study metrics and its constraint values (`vaestudy.training.feasibility`:
  own constraints on the validation split, saturated multipliers, the yardstick;
  `study.search_constraints` picks which), set with Optuna's named constraints
  (`Trial.set_constraint`) before the tell, so TPE and NSGA-II steer toward feasible trials
  and `best_trial(s)` are feasible ones;
- a diverged trial is told as COMPLETE with the worst value (±inf) and the constraint
  `diverged` where the sampler reads constraints (tpe, nsga2) and the search sees any: it counts
  as infeasible there; otherwise it is told FAILED, so it never counts as a (fake) objective
  value and never stays RUNNING;
- a trial that Tune stopped before its end (a scheduler) is told PRUNED; one whose attempts all
  errored (an infrastructure failure, not a result) is told FAILED without `vaestudy_ended`, so
  it does not use up the budget and `--resume` runs it again;
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
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from vaestudy.config.dotted import unprefixed
from vaestudy.study.report_keys import DIVERGED, SATURATED, member_key, member_prefix
from vaestudy.study.spec import (
    TRIAL_NUMBER,
    Choice,
    Distribution,
    IntRange,
    LogUniform,
    SamplerSpec,
    Study,
    Uniform,
    is_primitive,
    variant_param,
)
from vaestudy.training.feasibility import WORST, Scope, Yardstick, search_constraints, split_names

READS_CONSTRAINTS = ("tpe", "nsga2")  # samplers of ours that use Optuna's constraint values


def choice_labels(key: str, dist: Choice, study: Study) -> list[Any]:
    """What Optuna sees for each choice: the value itself if primitive, else `<index>:<label>`
    with the objective variant's label (`vaestudy.study.spec`) or the config's name."""
    out: list[Any] = []
    for i, value in enumerate(dist.choice):
        if is_primitive(value):
            out.append(value)
        elif key == "objective" and study.variants:
            out.append(f"{i}:{study.variants[i]}")
        else:
            out.append(
                f"{i}:{value['name']}" if isinstance(value, dict) and "name" in value else f"{i}"
            )
    return out


class SearchSpace:
    """Define-by-run space (a picklable callable): suggests every distribution of the study,
    and after the objective variant, that variant's own searched keys (`variant_param`)."""

    def __init__(self, study: Study) -> None:
        self.distributions = study.distributions
        self.labels = {
            key: choice_labels(key, dist, study)
            for key, dist in study.distributions.items()
            if isinstance(dist, Choice)
        }
        self.variant_distributions = study.variant_distributions
        self.variants = study.variants

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's config params from its Optuna params (choice labels -> the values)."""
        out = dict(params)
        for key, labels in self.labels.items():
            if key in out:
                out[key] = self.distributions[key].choice[labels.index(out[key])]
        return out

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for key, dist in self.distributions.items():
            if not isinstance(dist, Choice):
                suggest(trial, key, dist)
                continue
            labels = self.labels[key]
            index = labels.index(trial.suggest_categorical(key, labels))
            resolved[key] = dist.choice[index]
            if key == "objective" and self.variant_distributions:
                for own, own_dist in self.variant_distributions[index].items():
                    suggest(trial, variant_param(own, self.variants[index]), own_dist)
        return resolved


def suggest(trial: optuna.Trial, name: str, dist: Distribution) -> Any:
    """One value of a distribution whose choices (if any) are plain values."""
    if isinstance(dist, Uniform):
        return trial.suggest_float(name, *dist.uniform)
    if isinstance(dist, LogUniform):
        return trial.suggest_float(name, *dist.loguniform, log=True)
    if isinstance(dist, IntRange):
        return trial.suggest_int(name, *dist.int, step=dist.step)
    return trial.suggest_categorical(name, dist.choice)


def make_sampler(spec: SamplerSpec, earlier_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler. A search resumed over a ledger that already holds trials draws from
    `seed + earlier_trials`: the same seed would replay the first session's draws (its random
    start-up trials) and evaluate parameters already evaluated."""
    seed = spec.seed + earlier_trials
    startup = {} if spec.startup_trials is None else {"n_startup_trials": spec.startup_trials}
    if spec.kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **startup)
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, **startup)
    if spec.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.BruteForceSampler(seed=seed)


TUNE_ID = "tune_trial_id"
ENDED = "vaestudy_ended"


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether an Optuna trial uses up one of the study's trials: all but the FAILED ones that
    did not reach an end (their attempts errored, or a killed driver left them): they are run
    again; and but the enqueued ones still WAITING to run (`vaestudy.study.confirm`)."""
    if trial.state == TrialState.WAITING:
        return False
    return trial.state != TrialState.FAIL or bool(trial.user_attrs.get(ENDED))


@dataclass(frozen=True)
class TrialTeller:
    """How a trial that reached its end is told to Optuna (see the module doc); used by the
    search and by the runner's settling of trials a killed driver left RUNNING."""

    metrics: list[str]
    modes: list[str]
    scope: Scope = "both"
    rules: list[Yardstick] = field(default_factory=list)
    diverged_infeasible: bool = False  # the sampler reads constraints: diverged = infeasible

    @classmethod
    def for_study(cls, study: Study) -> TrialTeller:
        spec = study.spec
        reads = spec.sampler.kind in READS_CONSTRAINTS and spec.search_constraints != "none"
        return cls(spec.metrics, spec.modes, spec.search_constraints, spec.constraints, reads)

    def tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        val: dict[str, float] | None,
        saturated: list[str],
    ) -> None:
        """`val`: the trial's final validation metrics (keys without `val/`), None if it
        diverged. The search never sees a test metric."""
        values = None if val is None else [val.get(m.removeprefix("val/")) for m in self.metrics]
        if val is None and self.diverged_infeasible:
            values = [math.inf if mode == "min" else -math.inf for mode in self.modes]
        if values is None or None in values:
            tell(study, trial, state=TrialState.FAIL)
            return
        for key, value in search_constraints(self.scope, val, self.rules, saturated).items():
            trial.set_constraint(key, value)
        tell(study, trial, values if len(values) > 1 else values[0])


def tell(study: optuna.Study, trial: optuna.Trial, values: Any = None, **kwargs: Any) -> None:
    """`study.tell`, where an exhausted grid's `study.stop()` (BruteForceSampler) is no error:
    outside `Study.optimize` it raises, after the trial's result is stored."""
    try:
        study.tell(trial, values, **kwargs)
    except RuntimeError as exc:
        if "Study.stop" not in str(exc):
            raise


def final_outcome(result: dict[str, Any]) -> tuple[dict[str, float] | None, list[str]]:
    """(validation metrics or None if diverged, saturated multipliers) from a trial's final
    report."""
    val = None if result[DIVERGED] else unprefixed(result, "val/")
    return val, split_names(result.get(SATURATED))


class StudySearch(OptunaSearch):
    """See the module doc. `balance`: the objective variants' Optuna labels when
    `study.budget_per_variant` assigns each trial its variant (the sampler then searches only
    that variant's keys)."""

    def __init__(
        self,
        *args: Any,
        num_trials: int,
        teller: TrialTeller,
        balance: list[str] | None = None,
        refill: Callable[[optuna.Study], list[dict[str, Any]]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.num_trials = num_trials
        self.teller = teller
        self.balance = balance
        self.refill = refill

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials:
            trials = self._ot_study.get_trials(deepcopy=False)
            if sum(counts(t) for t in trials) >= self.num_trials:
                return Searcher.FINISHED
            if self.refill is not None and not any(t.state == TrialState.WAITING for t in trials):
                if set(self._ot_trials) - self._completed_trials:
                    return None  # wait: what runs now decides what is enqueued next
                more = self.refill(self._ot_study)
                if not more:
                    return Searcher.FINISHED
                for params in more:
                    self._ot_study.enqueue_trial(params)
            if self.balance:
                self._ot_study.enqueue_trial({"objective": self._next_variant(trials)})
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            trial = self._ot_trials[trial_id]
            trial.set_user_attr(TUNE_ID, trial_id)
            if isinstance(config, dict):
                config[TRIAL_NUMBER] = trial.number
        return config

    def _next_variant(self, trials: list[optuna.trial.FrozenTrial]) -> str:
        """The first variant with the fewest trials that count or wait to run: every variant
        gets exactly the same budget, and a trial whose attempts errored is run again in its
        own variant."""
        taken = Counter(
            t.params.get("objective", t.system_attrs.get("fixed_params", {}).get("objective"))
            for t in trials
            if counts(t) or t.state == TrialState.WAITING
        )
        return min(self.balance or [], key=lambda label: taken[label])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, str) and abs(result.get(self.metric, 0.0)) >= WORST:
            return  # a quick evaluation lacks this metric
        # After a restore, Tune may replay a trial that Optuna already recorded as finished.
        with contextlib.suppress(UpdateFinishedTrialError):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return  # replayed by Tune after a restore
        trial = self._ot_trials[trial_id]
        self._completed_trials.add(trial_id)
        with contextlib.suppress(UpdateFinishedTrialError, ValueError):
            if result and DIVERGED in result:  # the trial reached its own end
                trial.set_user_attr(ENDED, True)
                self.teller.tell(self._ot_study, trial, *final_outcome(result))
            elif error or not result:  # its attempts errored: not a result, does not count
                tell(self._ot_study, trial, state=TrialState.FAIL)
            else:  # a scheduler stopped it: a result (it counts)
                trial.set_user_attr(ENDED, True)
                tell(self._ot_study, trial, state=TrialState.PRUNED)


class PackSearch(StudySearch):
    """Up to `pack` Optuna trials per Tune trial, each told its own result (see module doc)."""

    def __init__(self, *args: Any, pack: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pack = pack
        self._members: dict[str, list[str]] = {}

    def joins(self, first: dict[str, Any]) -> bool:
        """Whether the next trial may join a pack whose first member is `first` (here: any)."""
        return True

    def suggest(self, trial_id: str) -> dict | None:
        configs: list[dict[str, Any]] = []
        for i in range(self.pack):
            if configs and not self.joins(configs[0]):
                break
            config = super().suggest(member_key(trial_id, i))
            if not isinstance(config, dict):
                if not configs:
                    return config  # None (wait) or FINISHED
                break
            configs.append(config)
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


def _trials_so_far(storage: optuna.storages.RDBStorage, study_name: str) -> int:
    """How many trials the Optuna study `study_name` holds (0 if it does not exist yet)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def make_search(
    study: Study,
    storage_url: str,
    study_name: str,
    *,
    space: Any = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    num_trials: int | None = None,
    pack: int | None = None,
    packs: Callable[..., PackSearch] = PackSearch,
    refill: Callable[[optuna.Study], list[dict[str, Any]]] | None = None,
) -> StudySearch:
    """The study's search (its space, sampler, budget and pack size), or, with the keyword
    arguments, another walk over the same metrics and ledger rules (`vaestudy.study.confirm`:
    with `refill`, it runs only enqueued trials, and when none waits and none runs, what
    `refill(the Optuna study)` says to enqueue next, until it says nothing); `packs` makes the
    search of a pack size above 1."""
    spec = study.spec
    multi = len(spec.metrics) > 1
    pack = spec.pack if pack is None else pack
    storage = optuna.storages.RDBStorage(storage_url)
    common: dict[str, Any] = {
        "teller": TrialTeller.for_study(study),
        "space": space or SearchSpace(study),
        "metric": spec.metrics if multi else spec.metrics[0],
        "mode": spec.modes if multi else spec.modes[0],
        "sampler": sampler or make_sampler(spec.sampler, _trials_so_far(storage, study_name)),
        "study_name": study_name,
        "storage": storage,
        "num_trials": spec.num_trials if num_trials is None else num_trials,
        "refill": refill,
    }
    if space is None and spec.budget_per_variant:
        common["balance"] = choice_labels("objective", study.distributions["objective"], study)
    if pack > 1:
        return packs(**common, pack=pack)
    return StudySearch(**common)
