"""The confirmed verdict: constraint margins with intervals, paired comparisons, and which
questions more seeds could still settle (the race of `vaestudy.study.confirm`).

Confirmation runs share their seeds across variants (seed s of every variant: the same
initialisation where the network is the same, the same epoch order and the same binarisation
draws; the reparameterisation noise is the objective's own), so variants are compared seed by
seed.

- **Margin** of a run on a constraint, in the constraint's units (nats per example; MMD × 10⁴):
  value − target on the test split for an own constraint (`constraint/<name>` ≤ `target/<name>`),
  value − bound for a yardstick rule `metric <= bound`, bound − value for `metric >= bound`.
  Negative = satisfied. Per variant and constraint: the mean margin over its seeds with a
  Student-t interval (`scipy.stats.ttest_1samp(...).confidence_interval`) and a three-way verdict:
  *satisfied* (the interval lies below 0), *violated* (above 0), *undecided* (it holds 0).
- **Paired difference** of two variants on the study metric (test split): per common seed,
  A − B; its mean with the paired-t interval (the t interval of the differences, as
  `scipy.stats.ttest_rel` gives it); A is better, B is better, or a *tie* (the interval holds
  0). The probability that A beats B on a fresh seed is estimated as the share of common seeds
  where A's value is better (ties count one half), with a Wilson interval
  (`scipy.stats.binomtest(...).proportion_ci`), as Bouthillier et al. (2021, "Accounting for
  variance in machine learning benchmarks") compare paired runs.
- **Looks.** The race looks at the results after `seeds`, `seeds + step`, ... up to `max_seeds`
  seeds per variant (a fixed schedule; `Race.schedule`). Each look may decide, so every decision
  uses the Bonferroni level 1 − 0.05/L for L looks (`Race.level`): the chance that any look calls
  a false decision on one constraint or pair stays under 5% (no correction across constraints
  or pairs: each is its own statement). With one look it is the plain 95%.
- **Open questions** (`open_questions`): a variant gets more seeds when one of its constraints is
  undecided, or when it ties with its neighbour in the ranking, and the question could be settled
  within `max_seeds`: the observed mean is larger than the half-width the interval would have at
  `max_seeds` seeds with the observed spread. Otherwise it stops, and the report says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vaestudy.report.intervals import LEVEL, Interval
from vaestudy.training.feasibility import Yardstick

SATISFIED, VIOLATED, UNDECIDED = "satisfied", "violated", "undecided"
TIE = "tie"
MORE_DUE = "more seeds due"  # an undecided margin the race has not finished with


@dataclass(frozen=True)
class Race:
    """`study.confirm`'s schedule: `seeds` per variant first, then `step` more at each look for
    the variants still open, up to `max_seeds` (`seeds` = `max_seeds`: one look, no race)."""

    seeds: int
    max_seeds: int
    step: int
    first_seed: int = 1000

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Race:
        """The race a study run logged (`study.confirm.*`; runs from before racing: one look)."""
        seeds = int(params.get("study.confirm.seeds", "0"))
        max_seeds = params.get("study.confirm.max_seeds", "None")
        step = params.get("study.confirm.step", "None")
        return cls(
            seeds,
            seeds if max_seeds == "None" else int(max_seeds),
            seeds if step == "None" else int(step),
            int(params.get("study.confirm.first_seed", "1000")),
        )

    def new_seeds(self, look: int) -> list[int]:
        """The seeds a variant still open at look `look` (0: every variant) trains next."""
        counts = [0, *self.schedule()]
        return list(range(self.first_seed + counts[look], self.first_seed + counts[look + 1]))

    def schedule(self) -> list[int]:
        """Seeds per variant at each look: `seeds`, `seeds + step`, ..., `max_seeds`."""
        if not self.seeds:
            return []
        return [*range(self.seeds, self.max_seeds, max(1, self.step)), self.max_seeds]

    @property
    def level(self) -> float:
        """The confidence level of each look's decisions: 1 − 0.05/L for L looks (Bonferroni)."""
        return 1 - (1 - LEVEL) / max(1, len(self.schedule()))

    def level_text(self) -> str:
        looks = len(self.schedule())
        how = f" (Bonferroni over {looks} looks)" if looks > 1 else ""
        return f"{100 * self.level:.4g}%{how}"


def ci_text(mean: float, low: float, high: float) -> str:
    """`+2.1 [0.4, 3.8]`; `+2.1 [n/a]` without an interval."""
    tail = "[n/a]" if math.isnan(low) else f"[{low:.3g}, {high:.3g}]"
    return f"{mean:+.3g} {tail}"


def _t_quantile(level: float, n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, n - 1))


def mean_interval(values: Sequence[float], level: float) -> tuple[float, Interval]:
    """The mean of the finite `values` and its Student-t interval at `level` (NaN bounds for
    fewer than two values)."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if not xs:
        return math.nan, Interval(math.nan, math.nan)
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, Interval(math.nan, math.nan)
    from scipy.stats import ttest_1samp

    with warnings.catch_warnings():  # identical values: scipy warns, the interval is [m, m]
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = ttest_1samp(xs, 0.0).confidence_interval(confidence_level=level)
    return mean, Interval(float(ci.low), float(ci.high))


def three_way(interval: Interval) -> str:
    """`satisfied` (the margin's interval lies below 0), `violated` (above 0), or `undecided`."""
    if interval.high < 0:
        return SATISFIED
    if interval.low > 0:
        return VIOLATED
    return UNDECIDED


def could_settle(values: Sequence[float], max_n: int, level: float) -> bool:
    """Whether an interval around the mean of `values` would exclude 0 at `max_n` values with
    their observed spread: |mean| > t·sd/√max_n. Fewer than two values: whether more may come."""
    xs = [float(v) for v in values if math.isfinite(v)]
    if len(xs) < 2:
        return len(xs) < max_n
    if len(xs) >= max_n:
        return False
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return abs(mean) > _t_quantile(level, max_n) * sd / math.sqrt(max_n)


@dataclass(frozen=True)
class Rule:
    """A constraint a confirmed variant is judged by: an own constraint (`kind` "own", its
    column `<name>: test` against `<name>: target`) or a yardstick rule."""

    name: str
    kind: str  # "own" | "yardstick"
    yardstick: Yardstick | None = None

    def margins(self, runs: pd.DataFrame) -> pd.Series:
        """Each run's margin (negative = satisfied; NaN where the run has no test value)."""
        if self.yardstick is None:
            return runs[f"{self.name}: test"] - runs[f"{self.name}: target"]
        column = runs.get(f"test/{self.yardstick.metric}", pd.Series(math.nan, index=runs.index))
        if self.yardstick.direction == "<=":
            return column - self.yardstick.bound
        return self.yardstick.bound - column


def rules(runs: pd.DataFrame, yardstick: list[Yardstick]) -> list[Rule]:
    """The own constraints that `runs` log (in column order), then the yardstick's rules."""
    own = [c.removesuffix(": test") for c in runs.columns if c.endswith(": test")]
    own = [name for name in own if runs[f"{name}: test"].notna().any()]
    return [Rule(n, "own") for n in own] + [Rule(y.label, "yardstick", y) for y in yardstick]


def margins(
    confirm: pd.DataFrame, yardstick: list[Yardstick], level: float, max_seeds: int
) -> pd.DataFrame:
    """Per confirmed variant and constraint: seeds run, the margin's mean and interval at
    `level`, the verdict, and for an undecided one why it got no more seeds."""
    rows = []
    for variant, runs in confirm.groupby("variant", sort=True):
        for rule in rules(runs, yardstick):
            values = rule.margins(runs).dropna().tolist()
            if rule.kind == "own" and not values:
                continue  # a constraint of another variant's objective
            mean, interval = mean_interval(values, level)
            verdict = three_way(interval)
            rows.append({
                "variant": variant,
                "constraint": rule.name,
                "kind": rule.kind,
                "seeds": len(runs),
                "with margin": len(values),
                "margin mean": mean,
                "margin low": interval.low,
                "margin high": interval.high,
                "verdict": verdict,
                "stopped": "" if verdict != UNDECIDED else _why_stopped(
                    values, len(runs), max_seeds, level),
            })  # fmt: skip
    return pd.DataFrame(rows)


def _why_stopped(values: list[float], seeds: int, max_seeds: int, level: float) -> str:
    if seeds >= max_seeds:
        return f"max_seeds ({max_seeds}) reached"
    if could_settle(values, max_seeds, level):
        return MORE_DUE
    return f"within the noise: {max_seeds} seeds would not settle it"


def variant_verdicts(table: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Per variant, the conjunction of its constraints' verdicts, short and in full: `meets`
    (every one satisfied); `fails: <names>` (violated ones, in full with their mean margins);
    else `undecided: <names>` (in full with margins, seeds and why they stopped)."""
    out = {}
    for variant, rows in table.groupby("variant", sort=False):
        bad = rows[rows["verdict"] == VIOLATED]
        open_ = rows[rows["verdict"] == UNDECIDED]
        if len(bad):
            full = [f"{r['constraint']} {r['margin mean']:+.3g}" for _, r in bad.iterrows()]
            out[variant] = ("fails: " + ", ".join(bad["constraint"]), "fails: " + ", ".join(full))
        elif len(open_):
            full = [
                f"{r['constraint']} {r['margin mean']:+.3g} ({r['seeds']} seeds, {r['stopped']})"
                for _, r in open_.iterrows()
            ]
            out[variant] = ("undecided: " + ", ".join(open_["constraint"]),
                            "undecided: " + ", ".join(full))  # fmt: skip
        else:
            out[variant] = ("meets", "meets")
    return out


def per_seed(confirm: pd.DataFrame, column: str) -> dict[str, dict[int, float]]:
    """Per variant, `column`'s finite value by confirmation seed."""
    out: dict[str, dict[int, float]] = {}
    for variant, runs in confirm.groupby("variant", sort=True):
        values = zip(runs["train.seed"], runs[column], strict=True)
        out[variant] = {int(s): float(v) for s, v in values if math.isfinite(v)}
    return out


def paired(a: dict[int, float], b: dict[int, float], mode: str, level: float) -> dict[str, Any]:
    """A against B over their common seeds: the mean difference A − B with its paired-t interval
    at `level`, the share of seeds on which A is better with its Wilson interval, and the
    verdict (`A`, `B` or `tie`)."""
    seeds = sorted(a.keys() & b.keys())
    diffs = [a[s] - b[s] for s in seeds]
    mean, interval = mean_interval(diffs, level)
    sign = -1.0 if mode == "min" else 1.0  # A better: a lower (min) or higher (max) value
    wins = sum(sign * d > 0 for d in diffs)
    ties = sum(d == 0 for d in diffs)
    n = len(diffs)
    p, p_low, p_high = math.nan, math.nan, math.nan
    if n:
        from scipy.stats import binomtest

        p = (wins + ties / 2) / n
        p_low = float(binomtest(wins, n).proportion_ci(level, "wilson").low)
        p_high = float(binomtest(wins + ties, n).proportion_ci(level, "wilson").high)
    # The interval of sign·(A − B): above 0, A is better; below 0, B is.
    low, high = (interval.low, interval.high) if sign > 0 else (-interval.high, -interval.low)
    winner = {VIOLATED: "A", SATISFIED: "B"}.get(three_way(Interval(low, high)), TIE)
    return {
        "seeds": n,
        "diff mean": mean,
        "diff low": interval.low,
        "diff high": interval.high,
        "P(A better)": p,
        "P low": p_low,
        "P high": p_high,
        "better": winner,
        "diffs": diffs,
    }


def ranking(
    values: dict[str, dict[int, float]], mode: str, level: float
) -> tuple[list[str], list[str]]:
    """Variants by their mean (best first) and their ranks: a variant that ties, in the paired
    comparison, with the best-ranked variant above it that no other resolves shares its rank
    (`=k`)."""

    def mean(v: str) -> float:
        xs = list(values[v].values())
        return sum(xs) / len(xs) if xs else math.nan

    order = sorted(values, key=lambda v: (math.isnan(mean(v)), mean(v) * (1 if mode == "min"
                                                                           else -1)))  # fmt: skip
    ranks, leader = [], 0
    for i, variant in enumerate(order):
        if i and paired(values[order[leader]], values[variant], mode, level)["better"] == TIE:
            ranks.append(f"={leader + 1}")
        else:
            leader = i
            ranks.append(str(i + 1))
    return order, ranks


def pairs(
    values: dict[str, dict[int, float]], mode: str, level: float, metric: str
) -> pd.DataFrame:
    """Every pair of variants (A ranked above B), paired on their common seeds (`paired`)."""
    order, _ = ranking(values, mode, level)
    rows = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            result = paired(values[a], values[b], mode, level)
            result.pop("diffs")
            rows.append({"A": a, "B": b, "metric": metric, **result})
    return pd.DataFrame(rows)


def open_questions(
    confirm: pd.DataFrame,
    margin_table: pd.DataFrame,
    values: dict[str, dict[int, float]],
    mode: str,
    level: float,
    max_seeds: int,
) -> dict[str, list[str]]:
    """Variants that more seeds could still settle, each with why: an undecided constraint
    (`could_settle` its margins within `max_seeds`), or a tie with its neighbour in the ranking
    that `max_seeds` seeds could resolve (both neighbours get seeds)."""
    seeds = confirm.groupby("variant")["train.seed"].count().to_dict()
    out: dict[str, list[str]] = {}
    open_ = margin_table[margin_table["stopped"] == MORE_DUE] if len(margin_table) else []
    for _, row in pd.DataFrame(open_).iterrows():
        out.setdefault(row["variant"], []).append(f"{row['constraint']} undecided")
    order, _ = ranking(values, mode, level)
    for a, b in zip(order, order[1:], strict=False):
        if max(seeds.get(a, 0), seeds.get(b, 0)) >= max_seeds:
            continue
        result = paired(values[a], values[b], mode, level)
        if result["better"] == TIE and could_settle(result["diffs"], max_seeds, level):
            out.setdefault(a, []).append(f"ties with {b}")
            out.setdefault(b, []).append(f"ties with {a}")
    return out
