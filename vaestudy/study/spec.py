"""Study files: the trial template (`data`, `model`, `objective`, `train`) plus a `study` section.

    study:
      name: geco
      metric: val/iwae_nll           # or a list, with a list of modes (multi-objective)
      mode: min
      num_trials: 40
      max_concurrent: 4
      sampler: {kind: tpe, seed: 0}  # tpe | gp | random | cmaes | nsga2 | grid
      resources: {cpu: 1, gpu: 0.25} # gpu: fraction of one GPU per trial
      scheduler: {kind: asha, grace_period: 2, reduction_factor: 2}   # optional
      max_failures: 2                # Ray Tune retries of a crashed trial
      pack: 1                        # trials trained together as one vectorised computation
      checkpoint_interval_s: 30      # least seconds between a trial's checkpoints (0: each eval)
      confirm: {seeds: 3, max_seeds: 6}   # after the search: fresh seeds per variant, raced
      search:                        # dotted keys into the template; list elements by index
        objective.kappa: {uniform: [80, 110]}
        objective.multiplier.lr: {loguniform: [1.0e-4, 1.0e-2]}
        objective.epsilon.0: {int: [70, 100]}
        objective.kl: {choice: [analytic, mc]}
        train.seed: 3                # a fixed value
      constraints:                   # the study's yardstick, the same for every trial
        - {metric: recon, bound: 100, direction: "<="}
      search_constraints: both       # what the search sees: both | own | yardstick | none

The test split is for the verdict only. The study's metrics are validation metrics (`val/...`;
a `test/...` metric is refused, saying why), and yardstick rules name a metric without its split
(`recon`): the search, the scheduler, Optuna's best trial and every selection read the
validation split (`data.validation`), and each trial scores the test split once, at its end.

Feasibility (`vaestudy.training.feasibility`): a trial satisfies its own constraints (its
objective's, none saturated), the yardstick (`constraints`), or both (= feasible). The search sees
the constraints `search_constraints` names as Optuna constraint values (on validation), so TPE and
NSGA-II steer toward them and Optuna's best trial is the best one satisfying them; the report
always judges by both, on validation to select and on test for the verdict.

When `search` picks among whole objective configs (`objective: {choice: [...]}`), each choice is a
*variant* with a readable label: its name, and where several choices share a name, the keys in
which they differ (`kl_annealing[kind=cyclical, steps=2000]`). Tables, figures and MLflow tags
use these labels. A variant searches its own settings where its entry holds distributions:

        objective:
          choice:
            - {name: beta_vae, beta: {loguniform: [0.25, 4.0]}}
            - {name: geco, kappa: {uniform: [115, 135]}, multiplier: {update: nupi,
               lr: {loguniform: [3.0e-4, 3.0e-3]}}}
      budget_per_variant: 3          # exactly 3 trials per variant (num_trials = 3 x variants)

Optuna names a variant's own key `<key>@<variant>` (`objective.kappa@geco`) and samples it only
in that variant's trials (a conditional space). `budget_per_variant: N` takes the choice of
variant away from the sampler: each new trial goes to the first variant with the fewest trials
(a trial whose attempts errored is run again in its variant), so every variant gets exactly N
trials of the sampler over its own keys, and none wins or loses by budget (not with the grid
sampler, which enumerates every combination itself).

`pack: K` (K > 1) trains K trials per Ray Tune trial as one vectorised computation
(`vaestudy.training.vectorized`): Optuna proposes K trials at once, each keeps its own MLflow run
and its own Optuna result. Packed trials may differ only in what vectorised members may differ in
(the seed, the objective's targets and weights, λ's initial value), so the search must stay within
those keys; `resources` and `max_concurrent` then count packs. No scheduler and no divergence
restarts with packs (a diverging member fails alone).

Where trials run: `study.resources.gpu` (a fraction of one GPU per trial, or per pack) decides.
With `train.device: auto` (the default) a trial trains on the GPU Ray gave it (`cuda`), and on
the CPU when it asked for none: a trial never uses a GPU Ray did not give it, even on a node
whose GPUs it can see. `train.device: cuda` needs `resources.gpu > 0` and `cpu` needs it 0 (a
study with either mismatch is refused, naming both keys); `cuda:N` is refused (Ray picks the
GPU). A study asking for GPUs where there are none (this machine, or every node of the
cluster) is refused before it starts (`vaestudy.study.preflight`), and so is one whose trials
cannot fit the fraction of a GPU they ask for.

Everything is checked before anything starts: keys must exist in the template, and each
distribution's extreme values (every choice) must give a valid trial config.
"""

from __future__ import annotations

import copy
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vaestudy.config.dotted import flatten, set_dotted
from vaestudy.config.objectives import objective_config
from vaestudy.config.run import (
    RunConfig,
    apply_overrides,
    format_validation_error,
    member_keys,
    parse_overrides,
    read_yaml,
    validate_run,
)
from vaestudy.errors import ConfigError
from vaestudy.training.feasibility import Scope, Yardstick

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Uniform(_Spec):
    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _order(self) -> Uniform:
        if self.uniform[0] >= self.uniform[1]:
            raise ValueError(f"uniform needs low < high, got {list(self.uniform)}")
        return self


class LogUniform(_Spec):
    loguniform: tuple[float, float]

    @model_validator(mode="after")
    def _order(self) -> LogUniform:
        low, high = self.loguniform
        if low <= 0 or low >= high:
            raise ValueError(f"loguniform needs 0 < low < high, got {[low, high]}")
        return self


class IntRange(_Spec):
    int: tuple[int, int]
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _order(self) -> IntRange:
        if self.int[0] > self.int[1]:
            raise ValueError(f"int needs low <= high, got {list(self.int)}")
        return self


class Choice(_Spec):
    choice: list[Any] = Field(min_length=1)


Distribution = Uniform | LogUniform | IntRange | Choice
_DIST_KEYS = {"uniform": Uniform, "loguniform": LogUniform, "int": IntRange, "choice": Choice}
VARIANT_SEP = "@"  # a variant's own searched key in Optuna: `objective.kappa@geco`


def extremes(dist: Distribution) -> list[Any]:
    """A distribution's extreme values (every option of a choice): what `Study.check` tries."""
    if isinstance(dist, Uniform):
        return list(dist.uniform)
    if isinstance(dist, LogUniform):
        return list(dist.loguniform)
    if isinstance(dist, IntRange):
        return list(dist.int)
    return list(dist.choice)


def describe(dist: Distribution) -> str:
    """`uniform [80.0, 110.0]`, `int [1, 9], step 2`, `one of 1, 2`."""
    if isinstance(dist, Choice):
        return "one of " + ", ".join(str(value) for value in dist.choice)
    (kind, bounds), *extra = dist.model_dump(exclude_defaults=True).items()  # e.g. int, step
    return f"{kind} {list(bounds)}" + "".join(f", {k} {v}" for k, v in extra)


def variant_param(key: str, label: str) -> str:
    """The Optuna name of `key` searched within objective variant `label` only."""
    return f"{key}{VARIANT_SEP}{label}"


class SamplerSpec(_Spec):
    kind: Literal["tpe", "gp", "random", "cmaes", "nsga2", "grid"] = "tpe"
    seed: int = 0
    startup_trials: int | None = Field(
        None,
        ge=0,
        description="tpe/gp/cmaes: random trials before the model (default: scaled to the "
        "budget, per variant with budget_per_variant: vaestudy.study.search.startup_trials)",
    )


class SchedulerSpec(_Spec):
    kind: Literal["asha"] = "asha"
    grace_period: int = Field(1, gt=0, description="evaluations before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)


class HopelessSpec(_Spec):
    """Stop search trials that cannot become feasible (`vaestudy.study.hopeless`: a margin on
    validation larger than any ended trial of the study recovered in the training left)."""

    after: float = Field(
        0.5, ge=0, lt=1, description="least fraction of its training before a trial is stopped"
    )
    min_ended: int = Field(
        8, ge=1, description="ended trials whose recoveries are seen before anything is stopped"
    )


class Resources(_Spec):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, le=1, description="fraction of one GPU per trial")

    @property
    def label(self) -> str:
        """Where each trial trains, and on what: `1 CPU + 0.25 GPU (trains on cuda)`."""
        if self.gpu:
            return f"{self.cpu:g} CPU + {self.gpu:g} GPU (trains on cuda)"
        return f"{self.cpu:g} CPU (trains on cpu)"


class DivergencePolicy(_Spec):
    """On divergence: restart from the last good state with lr × lr_factor, `retries` times."""

    retries: int = Field(0, ge=0)
    lr_factor: float = Field(0.3, gt=0, lt=1)


class ConfirmSpec(_Spec):
    """After the search, retrain each variant's selected configuration with fresh seeds
    (`vaestudy.study.confirm`): `first_seed`, `first_seed + 1`, ..., none of which the search
    may use. `seeds` per variant first; then, while a variant's verdict is still open (an
    undecided constraint, a tie with its neighbour that more seeds could resolve), `step` more
    (default: `seeds`) at each look, up to `max_seeds` (default: `seeds`, no race). The looks'
    decisions are made at the Bonferroni level 1 − 0.05/looks (`vaestudy.report.verdicts`)."""

    seeds: int = Field(0, ge=0, description="fresh seeds per variant (0: no confirmation)")
    max_seeds: int | None = Field(
        None, ge=1, description="most seeds per variant while its verdict is open (race)"
    )
    step: int | None = Field(None, ge=1, description="seeds added per look (default: seeds)")
    first_seed: int = Field(1000, ge=0)
    pack: bool | None = Field(
        None,
        description="train a variant's seeds of a look as one vectorised computation (default: "
        "when trials train on a GPU)",
    )

    @model_validator(mode="after")
    def _check_race(self) -> ConfirmSpec:
        if self.max_seeds is not None and self.max_seeds < self.seeds:
            raise ValueError(
                f"max_seeds ({self.max_seeds}) must be at least seeds ({self.seeds}): the race "
                "starts with `seeds` per variant and adds seeds up to `max_seeds`"
            )
        if self.max_seeds is not None and not self.seeds:
            raise ValueError("max_seeds needs seeds > 0 (the seeds every variant starts with)")
        return self

    def seeds_list(self) -> list[int]:
        """Every seed the confirmation may use (up to `max_seeds` per variant)."""
        return list(range(self.first_seed, self.first_seed + (self.max_seeds or self.seeds)))


class StudySpec(_Spec):
    name: str
    metric: str | list[str] = "val/iwae_nll"
    mode: Literal["min", "max"] | list[Literal["min", "max"]] = "min"
    num_trials: int = Field(20, gt=0)
    max_concurrent: int = Field(2, gt=0)
    sampler: SamplerSpec = SamplerSpec()
    resources: Resources = Resources()
    scheduler: SchedulerSpec | None = None
    stop_hopeless: HopelessSpec | None = Field(
        None, description="stop trials whose constraints are out of reach ({} for the defaults)"
    )
    max_failures: int = Field(2, ge=0)
    search: dict[str, Any] = Field(default_factory=dict)
    constraints: list[Yardstick] = Field(default_factory=list)
    search_constraints: Scope = "both"
    budget_per_variant: int | None = Field(
        None,
        gt=0,
        description="exactly this many trials per objective variant (num_trials follows)",
    )
    on_divergence: DivergencePolicy = DivergencePolicy()
    pack: int = Field(1, ge=1, description="trials trained together per Ray Tune trial")
    confirm: ConfirmSpec = ConfirmSpec()
    checkpoint_interval_s: float = Field(
        30.0,
        ge=0,
        description="least seconds between a trial's Tune checkpoints (taken at evaluations; "
        "0: at every evaluation). A crashed trial retries from its last checkpoint, so this "
        "bounds the work a crash loses; each checkpoint costs a state write and Tune's "
        "experiment snapshot",
    )

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, metric: str | list[str]) -> str | list[str]:
        for name in metric if isinstance(metric, list) else [metric]:
            bare = name.split("/", 1)[1] if name.startswith("test/") else None
            if bare is not None:
                raise ValueError(
                    f"{name!r}: the test split is for the verdict only; the search and every "
                    f"selection read the validation split: write val/{bare} (the report shows "
                    f"test/{bare} of what it selects)"
                )
            if not name.startswith("val/"):
                raise ValueError(f"{name!r}: a validation metric, e.g. val/{name}")
        return metric

    @model_validator(mode="before")
    @classmethod
    def _budget(cls, data: Any) -> Any:
        """`budget_per_variant: N` over V variants makes `num_trials` N × V."""
        budget = data.get("budget_per_variant") if isinstance(data, dict) else None
        if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
            return data  # absent, or the field's own validation reports it
        objective = (data.get("search") or {}).get("objective")
        if not (isinstance(objective, dict) and isinstance(objective.get("choice"), list)):
            raise ValueError(
                "budget_per_variant gives each objective variant its own trials; it needs the "
                "variants: search.objective: {choice: [...]}"
            )
        total = budget * len(objective["choice"])
        if data.get("num_trials", total) != total:
            raise ValueError(
                f"num_trials is {data['num_trials']}, but budget_per_variant {budget} x "
                f"{len(objective['choice'])} objective variants = {total} trials; leave "
                f"num_trials out (or set it to {total}), or change budget_per_variant"
            )
        return {**data, "num_trials": total}

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '_', '-', '.'")
        metrics = self.metrics
        modes = self.mode if isinstance(self.mode, list) else [self.mode]
        if len(metrics) != len(modes):
            raise ValueError(f"metric has {len(metrics)} entries but mode has {len(modes)}")
        if len(metrics) > 1 and self.scheduler is not None:
            raise ValueError("a scheduler needs a single metric (multi-objective has none)")
        if len(metrics) > 1 and self.sampler.kind in ("cmaes",):
            raise ValueError("sampler cmaes is single-objective; use nsga2, tpe or gp")
        if self.pack > 1 and self.scheduler is not None:
            raise ValueError("pack > 1 trains trials together; a scheduler stops single trials")
        if self.budget_per_variant and self.sampler.kind == "grid":
            raise ValueError(
                "budget_per_variant assigns each trial its variant, but the grid sampler "
                "enumerates every combination itself (each variant equally often): use a "
                "sampler that searches (tpe, gp, random, cmaes, nsga2), or drop budget_per_variant"
            )
        if self.search_constraints == "yardstick" and not self.constraints:
            raise ValueError("search_constraints: yardstick needs a `constraints` list")
        if self.pack > 1 and self.on_divergence.retries:
            raise ValueError("pack > 1: on_divergence.retries must be 0 (a member fails alone)")
        if self.scheduler and metrics[0].removeprefix("val/") in FULL_EVAL_ONLY:
            raise ValueError(
                f"metric {metrics[0]} is computed only at the end; a scheduler needs one "
                "available at every evaluation (e.g. val/elbo)"
            )
        return self

    @property
    def metrics(self) -> list[str]:
        return self.metric if isinstance(self.metric, list) else [self.metric]

    @property
    def per_variant(self) -> str:
        """` (N per objective variant)` after a trial count, when the budget is per variant."""
        budget = self.budget_per_variant
        return f" ({budget} per objective variant)" if budget else ""

    @property
    def modes(self) -> list[str]:
        return self.mode if isinstance(self.mode, list) else [self.mode]


# Held-out metrics that only the final (full) evaluation computes.
# The search adds each trial's Optuna trial number to its sampled parameters under this key:
# it names the trial's MLflow run (`<variant> #<number>`) and its row in the progress table.
TRIAL_NUMBER = "vaestudy_trial_number"
# A confirmation run's params carry which trial it confirms (`vaestudy.study.confirm`) and the
# index of its plan entry. Params named `vaestudy_...` are about the trial, not its config.
CONFIRMS = "vaestudy_confirms"
CONFIRM_INDEX = "vaestudy_confirm_index"
META_PREFIX = "vaestudy_"
FULL_EVAL_ONLY = {"iwae_nll", "active_units", "probe_acc", "probe_chance"}
_ALWAYS = {"elbo", "kl", "recon", *FULL_EVAL_ONLY}


class Study:
    """A validated study: the spec, the raw template and its parsed distributions."""

    def __init__(
        self,
        spec: StudySpec,
        template: dict[str, Any],
        source: str,
        overrides: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.overrides = list(overrides or [])  # the `--set` items applied to the file
        # Every key with its value, defaults included, so any key can be searched.
        self.template = validate_run(template, source).model_dump(mode="json")
        self.fixed: dict[str, Any] = {}
        self.distributions: dict[str, Distribution] = {}
        for key, value in spec.search.items():
            dist = _distribution(value, f"study.search.{key}", source)
            if dist is None:
                self.fixed[key] = value
            else:
                self.distributions[key] = dist
        # Each objective variant's own searched keys (distributions inside its choice).
        objective = self.distributions.get("objective")
        self.variant_distributions: list[dict[str, Distribution]] = [
            _nested_distributions(value, "objective", f"study.search.objective.choice.{i}", source)
            for i, value in enumerate(objective.choice if isinstance(objective, Choice) else [])
        ]

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def variants(self) -> list[str]:
        """One label per choice of a searched `objective` (empty when it is not searched): the
        objective's name, and where several choices share that name, the keys in which their
        full configs (defaults filled in) differ, by their last part when that is unambiguous:
        `kl_annealing[kind=cyclical, steps=2000]`."""
        dist = self.distributions.get("objective")
        if not isinstance(dist, Choice):
            return []
        flat = []
        for i in range(len(dist.choice)):
            config = self.trial_config({"objective": self.variant_config(i)})
            mine = flatten(config.objective.model_dump(mode="json"))
            for key, own in self.variant_distributions[i].items():
                mine[key.removeprefix("objective.")] = describe(own)
            flat.append(mine)
        labels = []
        for mine in flat:
            peers = [other for other in flat if other["name"] == mine["name"]]
            keys = sorted(k for k in mine if any(other.get(k) != mine[k] for other in peers))
            leaves = [k.rsplit(".", 1)[-1] for k in keys]
            short = leaves if len(set(leaves)) == len(leaves) else keys
            parts = [f"{k}={_short(mine[key])}" for k, key in zip(short, keys, strict=True)]
            labels.append(f"{mine['name']}[{', '.join(parts)}]" if parts else mine["name"])
        return labels

    @property
    def variant_searched(self) -> dict[str, Distribution]:
        """Each variant's own searched keys by their Optuna names (`objective.kappa@geco`)."""
        return {
            variant_param(key, label): dist
            for label, dists in zip(self.variants, self.variant_distributions, strict=True)
            for key, dist in dists.items()
        }

    @property
    def searched_keys(self) -> list[str]:
        """Every searched key as Optuna names it: the study's, then each variant's own."""
        return [*self.distributions, *self.variant_searched]

    def variant_config(self, index: int, pick: int = 0) -> Any:
        """Objective choice `index` with each of its own searched keys at its first (`pick` 0)
        or last (1) extreme value."""
        raw = {"objective": copy.deepcopy(self.distributions["objective"].choice[index])}
        for key, dist in self.variant_distributions[index].items():
            set_dotted(raw, key, extremes(dist)[-pick])
        return raw["objective"]

    def variant(self, params: dict[str, Any]) -> str:
        """The objective variant of a trial with sampled `params` (see the module doc)."""
        choices = self.distributions["objective"].choice if self.variants else []
        if params.get("objective") in choices:
            return self.variants[choices.index(params["objective"])]
        return self.trial_config(params).objective.name

    def trial_config(self, params: dict[str, Any]) -> RunConfig:
        """The template with the fixed values and the sampled `params` applied, validated."""
        return validate_run(self.trial_raw(params), self.source)

    def trial_raw(self, params: dict[str, Any]) -> dict[str, Any]:
        """The template with the fixed values and `params` applied; a variant's own keys
        (`objective.kappa@geco`) after the objective they belong to."""
        raw = copy.deepcopy(self.template)
        items = {**self.fixed, **params}.items()
        ordered = sorted(items, key=lambda item: VARIANT_SEP in item[0])
        for key, value in ordered:
            if not key.startswith(META_PREFIX):
                set_dotted(raw, key.split(VARIANT_SEP)[0], copy.deepcopy(value))
        return raw

    def check(self) -> None:
        """Validate keys, each distribution's extremes and the metrics, without running."""
        base = validate_run(self.template, self.source)
        if not self.spec.search:
            raise ConfigError(f"{self.source}: study.search: empty; name at least one key")
        for key in self.spec.search:
            _require_path(self.template, key, self.source)
        for key, values in self.extremes().items():
            for value in values:
                try:
                    RunConfig.model_validate(self.trial_raw({key: value}))
                except ValidationError as exc:
                    detail = format_validation_error(self.source, exc)
                    raise ConfigError(
                        f"{self.source}: study.search.{key}: value {value!r} gives an invalid "
                        f"trial:\n{detail}"
                    ) from None
        self._check_confirm_seeds(base)
        self._check_device()
        if self.spec.pack > 1:
            self._check_packable(base)
            if base.train.stop_saturated:
                raise ConfigError(
                    f"{self.source}: train.stop_saturated: packed trials train as one "
                    "computation, so stopping one saves nothing; use it with pack: 1"
                )
        known = self.known_metrics(base)
        for metric in [*self.spec.metrics, *(f"val/{c.metric}" for c in self.spec.constraints)]:
            if metric not in known:
                why = (
                    f" (data.pixels: {base.data.pixels} is not a log-likelihood)"
                    if metric == "val/iwae_nll"
                    else ""
                )
                raise ConfigError(
                    f"{self.source}: study: unknown metric {metric!r}{why}; this study's trials "
                    f"report {', '.join(sorted(known))}"
                )

    def _check_confirm_seeds(self, base: RunConfig) -> None:
        """Confirmation seeds must be fresh: none of them may be a seed the search uses."""
        fresh = set(self.spec.confirm.seeds_list())
        dist = self.distributions.get("train.seed")
        if isinstance(dist, IntRange):
            used = set(range(dist.int[0], dist.int[1] + 1, dist.step))
        elif isinstance(dist, Choice):
            used = set(dist.choice)
        else:
            used = {self.fixed.get("train.seed", base.train.seed)}
        if fresh & used:
            raise ConfigError(
                f"{self.source}: study.confirm.first_seed: the confirmation seeds "
                f"{sorted(fresh)} overlap the search's train.seed values "
                f"({sorted(fresh & used)}); confirmation needs seeds the search never used"
            )

    def _check_device(self) -> None:
        """One contract between `train.device` and `study.resources.gpu` (the module doc):
        a trial trains on a GPU exactly when Ray gives it one."""
        gpu = self.spec.resources.gpu
        devices = {self.trial_config({}).train.device}
        dist = self.distributions.get("train.device")
        if isinstance(dist, Choice):
            devices |= {str(d) for d in dist.choice}
        for device in sorted(devices):
            problem = None
            if device.startswith("cuda:"):
                problem = (
                    f"train.device: {device}: in a study Ray assigns each trial its GPU, which "
                    "the trial sees as cuda; write train.device: cuda (or auto) and set "
                    "study.resources.gpu"
                )
            elif device == "cuda" and not gpu:
                problem = (
                    "train.device: cuda, but study.resources.gpu is 0: the trial would use a "
                    "GPU Ray did not give it; set study.resources.gpu (e.g. 0.25: four trials "
                    "share a GPU), or train.device: auto or cpu"
                )
            elif device == "cpu" and gpu:
                problem = (
                    f"train.device: cpu, but study.resources.gpu is {gpu:g}: each trial would "
                    "hold a GPU it does not use; set study.resources.gpu: 0, or train.device: "
                    "auto or cuda"
                )
            if problem:
                raise ConfigError(f"{self.source}: {problem}")

    def _check_packable(self, base: RunConfig) -> None:
        allowed = member_keys(base)
        for key in self.distributions:
            if not any(key == a or key.startswith(f"{a}.") for a in allowed):
                raise ConfigError(
                    f"{self.source}: study.search.{key}: with study.pack > 1, packed trials "
                    f"may differ only in {', '.join(allowed)}; search {key} with pack: 1"
                )

    def extremes(self) -> dict[str, list[Any]]:
        """Each searched key's extreme values; objective variants at both ends of their own
        searched keys."""
        out = {key: extremes(dist) for key, dist in self.distributions.items()}
        if self.variant_distributions:
            out["objective"] = [
                self.variant_config(i, pick)
                for i, own in enumerate(self.variant_distributions)
                for pick in ((0, 1) if own else (0,))
            ]
        return out

    def known_metrics(self, base: RunConfig) -> set[str]:
        """Validation metrics any trial of this study reports (over every objective it may
        pick)."""
        names = {base.objective.name}
        objective_dist = self.distributions.get("objective")
        if isinstance(objective_dist, Choice):
            names |= {o["name"] for o in objective_dist.choice if isinstance(o, dict)}
        known = {f"val/{m}" for m in _ALWAYS}
        if not base.data.log_likelihood:  # the IWAE bound needs −log p(x|z)
            known.discard("val/iwae_nll")
        for name in names:
            for c in objective_config(name).constraint_names:
                known |= {f"val/constraint/{c}", f"val/satisfied/{c}"}
        return known


def trial_label(params: dict[str, Any]) -> str | None:
    """A trial's label from its params: `#3` (its Optuna trial number), or `#3 seed 1000` for
    the confirmation of trial #3 with seed 1000; None outside a study. Its MLflow run is named
    `<variant> <label>`."""
    confirms = params.get(CONFIRMS)
    if confirms is not None:
        return f"#{confirms['number']} seed {confirms['seed']}"
    number = params.get(TRIAL_NUMBER)
    return None if number is None else f"#{number}"


def _distribution(value: Any, where: str, source: str) -> Distribution | None:
    """`value` parsed as a distribution (a dict naming uniform, loguniform, int or choice), or
    None for a fixed value."""
    if not (isinstance(value, dict) and set(value) & set(_DIST_KEYS)):
        return None
    kind = next(k for k in value if k in _DIST_KEYS)
    try:
        return _DIST_KEYS[kind].model_validate(value)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, where)) from None


def _nested_distributions(tree: Any, prefix: str, where: str, source: str) -> dict[str, Any]:
    """The distributions inside an objective choice (that variant's own searched keys), by the
    dotted key of the trial config: `{kappa: {uniform: [80, 110]}}` -> `objective.kappa`."""
    if isinstance(tree, dict):
        items = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    else:
        return {}
    out: dict[str, Any] = {}
    for key, value in items:
        path, here = f"{prefix}.{key}", f"{where}.{key}"
        dist = _distribution(value, here, source)
        if isinstance(dist, Choice) and not all(is_primitive(v) for v in dist.choice):
            raise ConfigError(
                f"{source}: {here}: a variant's own choice takes plain values (numbers, "
                "strings, booleans); make each config its own objective choice instead"
            )
        if dist is not None:
            out[path] = dist
        else:
            out.update(_nested_distributions(value, path, here, source))
    return out


def is_primitive(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _require_path(tree: dict[str, Any], key: str, source: str) -> None:
    node: Any = tree
    for i, part in enumerate(key.split(".")):
        where = ".".join(key.split(".")[: i + 1])
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ConfigError(
                f"{source}: study.search.{key}: {where} is not a key of the trial config "
                "(see `vaestudy train --help` and the template sections)"
            )


def load_study(path: str | Path, overrides: list[str] | None = None) -> Study:
    """Read and fully validate a study file; `--set` overrides apply to the whole file."""
    raw = read_yaml(path)
    raw = apply_overrides(raw, parse_overrides(overrides), str(path))
    if "study" not in raw:
        raise ConfigError(f"{path}: study: missing section (a study file needs `study:`)")
    study_raw = raw.pop("study")
    try:
        spec = StudySpec.model_validate(study_raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc, "study")) from None
    study = Study(spec, raw, str(path), overrides)
    study.check()
    return study
