"""Feasibility: the one rule that the search, the report, the figures, MLflow and the CLI share.

A trial is judged at the end of its training, on a held-out split, by two sets of constraints:

- **its own constraints**: those its objective declares (GECO's `recon` <= κ, the Lagrangian
  VAE's `neg_elbo` <= ε1 and `mmd` <= ε2, ...), logged as `<split>/constraint/<name>` and
  `<split>/target/<name>`. It *satisfies its own constraints* when every one holds (value <= target)
  and none is saturated (below). An objective without constraints satisfies its own trivially.
  InfoVAE reports the Lagrangian VAE's constraints with λ frozen: they are its own too, so the
  report shows whether fixed weights meet the targets that learned multipliers would enforce.
- **the study's yardstick**: the rules of the study's `constraints` list, the same for every
  trial (e.g. `recon <= 110`). It *satisfies the yardstick* when every rule holds. A rule names
  a metric without its split: it is checked on whichever split is being judged.

Which split: everything that steers or selects (the search's constraint values, the best trial,
the configurations that confirmation retrains) judges the **validation** split (`val/...`); the
verdict that reports print is the same rule on the **test** split (`test/...`), scored once per
trial and read by nothing that steers.

**Feasible** = both. A trial without final metrics (diverged, crashed, stopped by a
scheduler, interrupted) satisfies neither. Units are those of the metric: nats per example for
`recon`, `kl`, `neg_elbo`; the scaled MMD value for `mmd`.

**Saturated**: a learned multiplier (`multiplier.update` other than `frozen`) that sat at its
upper clip (`multiplier.max`) for the last `TAIL` of the training steps: the optimiser kept
asking for more weight than it may have, so the target is unreachable at this budget. This is
neither a plain violation (λ still free to move) nor divergence (a non-finite value, or λ above
`train.max_lambda`). A saturated constraint is not satisfied, whatever its final value.

The search sees these as Optuna constraint values (<= 0 means satisfied; Optuna 5's named
constraints, `Trial.set_constraint`), the same keys for every trial of a study (Optuna's GP models
each key across all trials): `own` = the largest of the trial's own value − target (0 for an
objective without constraints of its own), `saturated` = the number of saturated multipliers,
`yardstick:<metric><op><bound>` = each rule's violation; a trial that diverged has every key at
WORST. `study.search_constraints` picks which of them the search sees.

Pure Python: no torch, Ray, MLflow or Optuna here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

TAIL = 0.2  # "the last part of training": the last 20% of the training steps
Scope = Literal["both", "own", "yardstick", "none"]
_CLIP_TOLERANCE = 1e-5  # relative: λ logged as an interval mean, in float32
WORST = 1e30  # a constraint value for "no value at all" (Optuna stores them as JSON: no inf)

# The words every part of the product uses for a trial's state, best first.
FEASIBLE = "feasible"
OWN_ONLY = "own only"  # satisfies its own constraints, misses the yardstick
YARDSTICK_ONLY = "yardstick only"  # meets the yardstick, misses its own constraints
NEITHER = "neither"
STATES = (FEASIBLE, YARDSTICK_ONLY, OWN_ONLY, NEITHER)


SPLITS = ("val/", "test/")


class Yardstick(BaseModel):
    """One rule of the study's shared yardstick: `metric direction bound`, the metric named
    without its split (`recon`): the search checks it on validation, the verdict on test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    bound: float
    direction: Literal["<=", ">="] = "<="

    @field_validator("metric")
    @classmethod
    def _no_split(cls, metric: str) -> str:
        if metric.startswith(SPLITS):
            bare = metric.split("/", 1)[1]
            raise ValueError(
                f"{metric!r}: name the metric without its split ({bare!r}): the search and "
                f"every selection check it on the validation split (val/{bare}), the verdict on "
                f"the test split (test/{bare}), which nothing that steers may read"
            )
        return metric

    @property
    def label(self) -> str:
        return f"{self.metric}{self.direction}{self.bound:g}"

    def violation(self, value: float | None) -> float:
        """How far `value` is on the wrong side of the bound (<= 0: the rule holds); +inf when
        the value is missing or not finite."""
        if value is None or not math.isfinite(value):
            return math.inf
        return value - self.bound if self.direction == "<=" else self.bound - value

    def holds(self, value: float | None) -> bool:
        return self.violation(value) <= 0


def own_violations(held_out: Mapping[str, float]) -> dict[str, float]:
    """Each own constraint's value − target from one split's metrics keyed `constraint/<name>`
    and `target/<name>` (the split's prefix removed)."""
    out = {}
    for key, value in held_out.items():
        if key.startswith("constraint/"):
            name = key.removeprefix("constraint/")
            out[name] = value - held_out[f"target/{name}"]
    return out


def saturated(
    history: Sequence[Mapping[str, float]],
    names: Iterable[str],
    clip: float,
    total_steps: float,
) -> list[str]:
    """The multipliers among `names` that sat at `clip` over the last `TAIL` of `total_steps`.

    `history` holds trajectory points (`step`, `lambda/<name>`), each the mean over its logging
    interval, so a point at the clip means λ was at the clip for the whole interval; λ has sat
    there since the start of the first interval of the final run of such points."""
    out = []
    for name in names:
        key = f"lambda/{name}"
        points = [(row["step"], row[key]) for row in history if key in row]
        since = None
        for i in range(len(points) - 1, -1, -1):
            if points[i][1] < clip * (1 - _CLIP_TOLERANCE):
                break
            since = points[i - 1][0] if i > 0 else 0.0
        if since is not None and points[-1][0] - since >= TAIL * total_steps:
            out.append(name)
    return out


def split_names(joined: str | None) -> list[str]:
    """Saturated multipliers as MLflow tags and Tune reports carry them: "recon,mmd"."""
    return [name for name in (joined or "").split(",") if name]


@dataclass(frozen=True)
class Verdict:
    """Where one trial stands: its own constraints, the yardstick, and both."""

    own: bool
    yardstick: bool

    @property
    def feasible(self) -> bool:
        return self.own and self.yardstick

    @property
    def state(self) -> str:
        if self.feasible:
            return FEASIBLE
        if self.yardstick:
            return YARDSTICK_ONLY
        return OWN_ONLY if self.own else NEITHER


def judge(
    held_out: Mapping[str, float] | None,
    rules: Sequence[Yardstick],
    saturated_names: Iterable[str] = (),
) -> Verdict:
    """Where a trial stands on one split, from its final metrics there (keys without the split's
    prefix, None if it has none), the study's yardstick and its saturated multipliers."""
    if not held_out:
        return Verdict(own=False, yardstick=False)
    own = not list(saturated_names) and all(v <= 0 for v in own_violations(held_out).values())
    yardstick = all(r.holds(held_out.get(r.metric)) for r in rules)
    return Verdict(own=own, yardstick=yardstick)


def search_constraints(
    scope: Scope,
    val: Mapping[str, float] | None,
    rules: Sequence[Yardstick],
    saturated_names: Iterable[str] = (),
) -> dict[str, float]:
    """The Optuna constraint values (<= 0: satisfied) of a trial that ended with validation
    metrics `val` (keys without `val/`; None for a diverged trial: every key WORST), for the
    constraints `scope` shows the search (see the module doc). A yardstick metric it lacks:
    WORST."""
    keys = []
    if scope in ("both", "own"):
        keys += ["own", "saturated"]
    if scope in ("both", "yardstick"):
        keys += [f"yardstick:{rule.label}" for rule in rules]
    if val is None:
        return dict.fromkeys(keys, WORST)
    out: dict[str, float] = {}
    if "own" in keys:
        out["own"] = max(own_violations(val).values(), default=0.0)
        out["saturated"] = float(len(list(saturated_names)))
    for rule in rules if scope in ("both", "yardstick") else ():
        out[f"yardstick:{rule.label}"] = min(rule.violation(val.get(rule.metric)), WORST)
    return out
