"""The Optuna side of a study: the define-by-run search space, samplers, and `StudySearch`.

`StudySearch` is a plain Ray Tune `Searcher` over an Optuna study, driven through Optuna's
public ask-and-tell interface (`Study.ask`, `Study.tell`, `Study.enqueue_trial`):

- `suggest` asks Optuna for a trial and runs the study's define-by-run space on it; the trial
  stays RUNNING in Optuna while Tune trains it, so a batch-aware sampler (TPE's constant liar,
  the GP's batch acquisition) sees the trials still running;
- every trial that reached its own end (its final report carries `vaestudy/diverged`) is told
  by `TrialTeller`: its study metrics and its constraint values (`vaestudy.training.feasibility`:
  own constraints on the validation split, saturated multipliers, the yardstick;
  `study.search_constraints` picks which), set with Optuna's named constraints
  (`Trial.set_constraint`) before the tell, so TPE, the GP and NSGA-II steer toward feasible
  trials and `best_trial(s)` are feasible ones;
- a diverged trial is told as COMPLETE with the worst value (±inf) and every constraint at
  its worst where the sampler reads constraints by rank (tpe, nsga2) and the search sees any:
  it counts as infeasible there; otherwise (the GP's regression would be wrecked by the outlier;
  samplers that read no constraints) it is told FAILED, so it never counts as a (fake) objective
  value and never stays RUNNING;
- a trial `vaestudy.study.hopeless` stopped (no run of this study ever recovered its margin)
  is told COMPLETE with its last evaluation's values and constraint values (infeasible) and the
  reason (`vaestudy_stopped`); one another scheduler stopped is told PRUNED; one whose
  attempts all errored (an infrastructure failure, not a result) is told FAILED without
  `vaestudy_ended`, so it does not use up the budget and `--resume` runs it again;
- results of a trial Optuna already recorded as finished (replayed by Tune after a restore) are
  ignored;
- the Optuna study is the ledger of the study's trial budget: each Optuna trial records its Tune
  trial id (`tune_trial_id`) and, when Tune ends it, `vaestudy_ended`; `suggest` stops once the
  study holds `num_trials` trials that count (`counts`). Trials a killed driver left RUNNING are
  settled from MLflow on `--resume` (`vaestudy.study.ledger`). The searcher's own state (which
  Tune trial is which Optuna trial) is saved with Tune's experiment and rebuilt from the
  ledger's trial numbers on `Tuner.restore`.

`PackSearch` proposes `pack` Optuna trials per Tune trial (config `{"members": [...]}`) and
tells each its own result, read from the pack's report under `member<i>/`. Each member has the
key `<tune trial id>/<i>`, which is also its Optuna `tune_trial_id` and its MLflow run's trial
tag, so the ledger and the resume settling treat members exactly like single trials.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState
from ray.tune.search import Searcher

from vaestudy.config.dotted import unprefixed
from vaestudy.study.report_keys import DIVERGED, SATURATED, member_key, member_prefix
from vaestudy.study.spec import (
    TRIAL_NUMBER,
    Choice,
    Distribution,
    IntRange,
    LogUniform,
    Study,
    Uniform,
    is_primitive,
    variant_param,
)
from vaestudy.training.feasibility import WORST, Scope, Yardstick, search_constraints, split_names

# Samplers that rank infeasible trials by their violation: a diverged trial is one, at its worst.
RANKS_INFEASIBLE = ("tpe", "nsga2")


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


def startup_trials(study: Study) -> int:
    """Random trials before a model-based sampler (tpe, gp, cmaes) starts to model: the study's
    `sampler.startup_trials`, else scaled to the budget: a quarter of it, at least 2 and at most
    Optuna's default 10 (a fixed 10 leaves a 16-trial study 6 guided trials, and a 3-per-variant
    study none). With `budget_per_variant` the start-up is counted per variant: variants are
    assigned in turn, so `startup × variants` trials give each variant `startup` random trials
    (a quarter of its budget, at least 1) and the model guides the rest of each variant's."""
    spec = study.spec
    if spec.sampler.startup_trials is not None:
        return spec.sampler.startup_trials
    if spec.budget_per_variant:
        return max(1, spec.budget_per_variant // 4) * len(study.variants)
    return max(2, min(10, spec.num_trials // 4))


def make_sampler(study: Study, earlier_trials: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler (`study.sampler.kind`), configured for small budgets of concurrent
    trials:

    - `tpe`: multivariate TPE (Falkner et al. 2018; Watanabe 2023) with `group` decomposition,
      so each objective variant's own keys (a conditional space) are modelled jointly within that
      variant's trials, and the constant liar for trials still running;
    - `gp`: Optuna's GPSampler, a Matérn-5/2 Gaussian process whose noise variance is fitted
      (not `deterministic_objective`: seeds of one configuration differ), with log EI times the
      probability of feasibility of the named constraints (Gardner et al. 2014) and batch
      acquisition over trials still running; it models the keys every trial shares (a variant's
      own keys are drawn at random);
    - `random`, `cmaes`, `nsga2`, `grid`: Optuna's, as they are.

    A search resumed over a ledger that already holds trials draws from `seed + earlier_trials`:
    the same seed would replay the first session's draws (its random start-up trials) and
    evaluate parameters already evaluated."""
    spec = study.spec.sampler
    seed = spec.seed + earlier_trials
    startup = startup_trials(study)
    if spec.kind == "tpe":
        with warnings.catch_warnings():  # `group` is marked experimental (since Optuna 2.8)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                constant_liar=True,
            )  # fmt: skip
    if spec.kind == "gp":
        return optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False
        )
    if spec.kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.kind == "cmaes":
        return optuna.samplers.CmaEsSampler(
            seed=seed, warn_independent_sampling=False, n_startup_trials=startup
        )
    if spec.kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.BruteForceSampler(seed=seed)


TUNE_ID = "tune_trial_id"
ENDED = "vaestudy_ended"
STOPPED = "vaestudy_stopped"  # why `vaestudy.study.hopeless` stopped the trial
ENQUEUED = "vaestudy_enqueued"  # an enqueued trial's fixed params, readable while it waits


def enqueue(ledger: optuna.Study, params: dict[str, Any]) -> None:
    """Queue a trial with fixed `params` (run before any the sampler proposes); they are kept as
    its user attribute too, which `planned` reads while it waits."""
    ledger.enqueue_trial(params, user_attrs={ENQUEUED: params})


def planned(trial: optuna.trial.FrozenTrial, key: str) -> Any:
    """A trial's value of `key`: its param, or while it waits in the queue, the enqueued one."""
    return trial.params.get(key, trial.user_attrs.get(ENQUEUED, {}).get(key))


def live_trial(
    ledger: optuna.Study, storage: optuna.storages.BaseStorage, number: int
) -> optuna.Trial:
    """The `optuna.Trial` (to set attributes and constraints on, and tell) of the ledger's trial
    `number`, found through the storage's public interface."""
    study_id = storage.get_study_id_from_name(ledger.study_name)
    return optuna.Trial(ledger, storage.get_trial_id_from_study_id_trial_number(study_id, number))


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
    diverged_infeasible: bool = False  # the sampler ranks infeasible trials: diverged is one

    @classmethod
    def for_study(cls, study: Study) -> TrialTeller:
        spec = study.spec
        ranks = spec.sampler.kind in RANKS_INFEASIBLE and spec.search_constraints != "none"
        return cls(spec.metrics, spec.modes, spec.search_constraints, spec.constraints, ranks)

    def tell(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        val: dict[str, float] | None,
        saturated: list[str],
        stopped: str | None = None,
    ) -> None:
        """`val`: the trial's final validation metrics (keys without `val/`), None if it
        diverged; `stopped`: why it was stopped as hopeless (`val` is then its last evaluation's,
        and a study metric that evaluation lacks is told as the worst value). The search never
        sees a test metric."""
        worst = [math.inf if mode == "min" else -math.inf for mode in self.modes]
        values = None if val is None else [val.get(m.removeprefix("val/")) for m in self.metrics]
        if values is not None and stopped is not None:
            values = [
                w if v is None or abs(v) >= WORST else v for v, w in zip(values, worst, strict=True)
            ]
            trial.set_user_attr(STOPPED, stopped)
        if val is None and self.diverged_infeasible:
            values = worst
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
    report, or from the last evaluation's report of a trial stopped before its end."""
    val = None if result.get(DIVERGED) else unprefixed(result, "val/")
    return val, split_names(result.get(SATURATED))


class StudySearch(Searcher):
    """See the module doc. `space`: the define-by-run space (returns the trial's config params
    beyond its Optuna params); `ledger`: the Optuna study, in `storage`; `balance`: the
    objective variants' Optuna labels when `study.budget_per_variant` assigns each trial its
    variant (the sampler then searches only that variant's keys); `stopped`: Tune trial id ->
    why `vaestudy.study.hopeless` stopped it (shared with the stopper)."""

    def __init__(
        self,
        *,
        space: Callable[[optuna.Trial], dict[str, Any]],
        metric: str | list[str],
        mode: str | list[str],
        ledger: optuna.Study,
        storage: optuna.storages.BaseStorage,
        num_trials: int,
        teller: TrialTeller,
        balance: list[str] | None = None,
        refill: Callable[[optuna.Study], list[dict[str, Any]]] | None = None,
        stopped: dict[str, str] | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space, self.ledger, self.storage = space, ledger, storage
        self.num_trials = num_trials
        self.teller = teller
        self.balance = balance
        self.refill = refill
        self.stopped = {} if stopped is None else stopped
        self.live: dict[str, optuna.Trial] = {}  # Tune trial id -> its Optuna trial, running

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self.live:
            trials = self.ledger.get_trials(deepcopy=False)
            if sum(counts(t) for t in trials) >= self.num_trials:
                return Searcher.FINISHED
            if self.refill is not None and not any(t.state == TrialState.WAITING for t in trials):
                if self.live:
                    return None  # wait: what runs now decides what is enqueued next
                more = self.refill(self.ledger)
                if not more:
                    return Searcher.FINISHED
                for params in more:
                    enqueue(self.ledger, params)
            if self.balance:
                enqueue(self.ledger, {"objective": self._next_variant(trials)})
            trial = self.ledger.ask()
            trial.set_user_attr(TUNE_ID, trial_id)
            self.live[trial_id] = trial
        trial = self.live[trial_id]
        resolved = self.space(trial)  # suggests the params first
        config = {**trial.params, **resolved}
        config[TRIAL_NUMBER] = trial.number
        return config

    def _next_variant(self, trials: list[optuna.trial.FrozenTrial]) -> str:
        """The first variant with the fewest trials that count or wait to run: every variant
        gets exactly the same budget, and a trial whose attempts errored is run again in its
        own variant."""
        taken = Counter(
            planned(t, "objective") for t in trials if counts(t) or t.state == TrialState.WAITING
        )
        return min(self.balance or [], key=lambda label: taken[label])

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return  # replayed by Tune after a restore
        try:
            if result and DIVERGED in result:  # the trial reached its own end
                trial.set_user_attr(ENDED, True)
                self.teller.tell(self.ledger, trial, *final_outcome(result))
            elif error or not result:  # its attempts errored: not a result, does not count
                tell(self.ledger, trial, state=TrialState.FAIL)
            elif trial_id in self.stopped:  # hopeless: infeasible, from its last evaluation
                trial.set_user_attr(ENDED, True)
                self.teller.tell(self.ledger, trial, *final_outcome(result), self.stopped[trial_id])
            else:  # another scheduler stopped it: a result (it counts)
                trial.set_user_attr(ENDED, True)
                tell(self.ledger, trial, state=TrialState.PRUNED)
        except UpdateFinishedTrialError:
            pass  # Optuna already holds its end (settled from MLflow on a resume)

    def get_state(self) -> dict[str, Any]:
        """Which Tune trial runs which Optuna trial (the rest lives in the ledger)."""
        return {"live": {tid: trial.number for tid, trial in self.live.items()}}

    def set_state(self, state: dict[str, Any]) -> None:
        states = (TrialState.RUNNING,)
        running = {t.number for t in self.ledger.get_trials(deepcopy=False, states=states)}
        self.live = {
            tid: live_trial(self.ledger, self.storage, n)
            for tid, n in state["live"].items() if n in running
        }  # fmt: skip

    def save(self, checkpoint_path: str) -> None:
        """Tune saves this with its experiment state, and restores it on `Tuner.restore`."""
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.get_state(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.set_state(pickle.load(file))


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

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        for i, key in enumerate(self._members.get(trial_id, [])):
            own = unprefixed(result or {}, member_prefix(i))
            super().on_trial_complete(key, own or None, error or not own)

    def get_state(self) -> dict[str, Any]:
        return super().get_state() | {"members": self._members}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._members = state["members"]


def _trials_so_far(storage: optuna.storages.BaseStorage, study_name: str) -> int:
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
    stopped: dict[str, str] | None = None,
) -> StudySearch:
    """The study's search (its space, sampler, budget and pack size), or, with the keyword
    arguments, another walk over the same metrics and ledger rules (`vaestudy.study.confirm`:
    with `refill`, it runs only enqueued trials, and when none waits and none runs, what
    `refill(the Optuna study)` says to enqueue next, until it says nothing); `packs` makes the
    search of a pack size above 1; `stopped`: the hopeless stopper's record."""
    spec = study.spec
    multi = len(spec.metrics) > 1
    pack = spec.pack if pack is None else pack
    storage = optuna.storages.RDBStorage(storage_url)
    ledger = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler or make_sampler(study, _trials_so_far(storage, study_name)),
        directions=["minimize" if mode == "min" else "maximize" for mode in spec.modes],
        load_if_exists=True,
    )
    common: dict[str, Any] = {
        "teller": TrialTeller.for_study(study),
        "space": space or SearchSpace(study),
        "metric": spec.metrics if multi else spec.metrics[0],
        "mode": spec.modes if multi else spec.modes[0],
        "ledger": ledger,
        "storage": storage,
        "num_trials": spec.num_trials if num_trials is None else num_trials,
        "refill": refill,
        "stopped": stopped,
    }
    if space is None and spec.budget_per_variant:
        common["balance"] = choice_labels("objective", study.distributions["objective"], study)
    if pack > 1:
        return packs(**common, pack=pack)
    return StudySearch(**common)
