"""Margins, paired comparisons and the race's open questions, checked against independent
computations (numpy with scipy's t quantiles; the hand-written Wilson interval)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vaestudy.report.intervals import wilson
from vaestudy.report.verdicts import (
    TIE,
    Race,
    could_settle,
    margins,
    open_questions,
    paired,
    pairs,
    per_seed,
    ranking,
    variant_verdicts,
)
from vaestudy.training.feasibility import Yardstick


def t_interval(xs: list[float], level: float) -> tuple[float, float, float]:
    """mean ± t_{(1+level)/2, n−1}·s/√n, by hand."""
    x = np.asarray(xs, dtype=float)
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def runs(variant: str, seeds: list[int], recon: list[float], kl: list[float], iwae: list[float],
         kappa: float | None = None) -> pd.DataFrame:  # fmt: skip
    """Confirmation rows as `vaestudy.report.tables` builds them."""
    frame = pd.DataFrame({
        "variant": variant, "train.seed": [float(s) for s in seeds], "status": "finished",
        "test/recon": recon, "test/kl": kl, "test/iwae_nll": iwae,
    })  # fmt: skip
    if kappa is not None:  # GECO's own constraint: recon <= kappa
        frame["recon: test"], frame["recon: target"] = recon, kappa
    return frame


YARDSTICK = [Yardstick(metric="recon", bound=135.0), Yardstick(metric="kl", bound=30.0,
                                                               direction="<=")]  # fmt: skip


@pytest.mark.parametrize("level", [0.95, 0.975])
def test_margins_are_t_intervals_of_value_minus_target(level):
    confirm = pd.concat([
        runs("geco", [1000, 1001, 1002], [130.1, 133.0, 131.2], [25.0, 31.0, 28.0],
             [100.0, 101.0, 99.0], kappa=132.0),
        runs("elbo", [1000, 1001, 1002], [120.0, 121.0, 119.5], [40.0, 41.0, 39.0],
             [95.0, 96.0, 95.5]),
    ])  # fmt: skip
    table = margins(confirm, YARDSTICK, level, max_seeds=6).set_index(["variant", "constraint"])
    assert list(table.loc["geco"].index) == ["recon", "recon<=135", "kl<=30"]
    assert list(table.loc["elbo"].index) == ["recon<=135", "kl<=30"]  # no own constraint
    for (variant, constraint), values in {
        ("geco", "recon"): [130.1 - 132, 133.0 - 132, 131.2 - 132],
        ("geco", "kl<=30"): [25.0 - 30, 31.0 - 30, 28.0 - 30],
        ("elbo", "recon<=135"): [120.0 - 135, 121.0 - 135, 119.5 - 135],
        ("elbo", "kl<=30"): [10.0, 11.0, 9.0],
    }.items():
        row = table.loc[(variant, constraint)]
        mean, low, high = t_interval(values, level)
        assert row["margin mean"] == pytest.approx(mean, rel=1e-12)
        assert (row["margin low"], row["margin high"]) == pytest.approx((low, high), rel=1e-9)
        expected = "satisfied" if high < 0 else "violated" if low > 0 else "undecided"
        assert row["verdict"] == expected
    assert table.loc[("elbo", "recon<=135"), "verdict"] == "satisfied"
    assert table.loc[("elbo", "kl<=30"), "verdict"] == "violated"
    assert table.loc[("geco", "recon"), "verdict"] == "undecided"
    verdicts = variant_verdicts(table.reset_index())
    assert verdicts["elbo"] == ("fails: kl<=30", "fails: kl<=30 +10")
    short, full = verdicts["geco"]  # kl: 28 ± a wide interval, undecided too
    assert short == "undecided: recon, recon<=135, kl<=30"
    assert full.startswith("undecided: recon -0.567 (3 seeds, ")


def test_an_undecided_margin_says_why_it_stopped():
    tight = runs("a", [1, 2, 3], [134.9, 135.1, 135.0], [1.0] * 3, [1.0] * 3)  # mean 0: noise
    wide = runs("b", [1, 2, 3], [120.0, 140.0, 125.0], [1.0] * 3, [1.0] * 3)  # mean −6.7
    rec = [Yardstick(metric="recon", bound=135.0)]
    at_max = margins(pd.concat([tight, wide]), rec, 0.95, max_seeds=3).set_index("variant")
    assert (at_max["stopped"] == "max_seeds (3) reached").all()
    racing = margins(pd.concat([tight, wide]), rec, 0.975, max_seeds=30).set_index("variant")
    assert racing.loc["a", "stopped"] == "within the noise: 30 seeds would not settle it"
    assert racing.loc["b", "stopped"] == "more seeds due"
    # could_settle: |mean| against the half-width at max_n seeds with the observed spread
    sd = float(np.std([120.0 - 135, 140.0 - 135, 125.0 - 135], ddof=1))
    assert stats.t.ppf(0.9875, 29) * sd / math.sqrt(30) < 20 / 3
    assert could_settle([-15.0, 5.0, -10.0], 30, 0.975)
    assert not could_settle([-15.0, 5.0, -10.0], 4, 0.975)  # 4 seeds: half-width > 6.7
    assert not could_settle([-1.0, 2.0], 2, 0.95)  # at max_n already


def test_paired_differences_against_an_independent_computation():
    a = {1000: 100.0, 1001: 103.0, 1002: 99.0, 1003: 101.5}
    b = {1000: 101.0, 1001: 104.5, 1002: 99.5, 1003: 103.0, 1004: 90.0}  # 1004: not common
    result = paired(a, b, "min", 0.95)
    diffs = [-1.0, -1.5, -0.5, -1.5]
    mean, low, high = t_interval(diffs, 0.95)
    assert result["seeds"] == 4 and result["diff mean"] == pytest.approx(mean, rel=1e-12)
    assert (result["diff low"], result["diff high"]) == pytest.approx((low, high), rel=1e-9)
    assert high < 0 and result["better"] == "A"  # lower NLL on every seed, resolved
    assert result["P(A better)"] == 1.0
    assert result["P low"] == pytest.approx(wilson(4, 4).low, rel=1e-9)
    # the same pair read as "max": B is better
    assert paired(a, b, "max", 0.95)["better"] == "B"
    # a shared shift between seeds cancels in the pairs, not in Welch's unpaired test
    shifted = {s: v + 3.0 * (s - 1000) for s, v in a.items()}
    other = {s: v + 0.4 for s, v in shifted.items()}
    assert paired(shifted, other, "min", 0.95)["better"] == "A"
    welch = stats.ttest_ind(list(shifted.values()), list(other.values()), equal_var=False)
    assert welch.pvalue > 0.5  # unpaired, the same runs are a tie


def test_ranks_follow_paired_ties_and_every_pair_is_listed():
    values = {
        "a": {1: 100.0, 2: 101.0, 3: 102.0},
        "c": {1: 101.0, 2: 103.0, 3: 99.0},  # mean 101: a tie with a
        "b": {1: 110.0, 2: 111.5, 3: 112.0},  # resolved from both
        "d": {},  # no finished run
    }
    order, ranks = ranking(values, "min", 0.95)
    assert order == ["a", "c", "b", "d"] and ranks == ["1", "=1", "3", "=3"]
    table = pairs(values, "min", 0.95, "test/iwae_nll")
    assert len(table) == 6 and set(zip(table["A"], table["B"], strict=True)) == {
        ("a", "c"), ("a", "b"), ("a", "d"), ("c", "b"), ("c", "d"), ("b", "d")}  # fmt: skip
    by_pair = table.set_index(["A", "B"])
    assert by_pair.loc[("a", "c"), "better"] == TIE
    assert by_pair.loc[("a", "b"), "better"] == "A" and by_pair.loc[("c", "b"), "better"] == "A"
    assert by_pair.loc[("b", "d"), "seeds"] == 0 and by_pair.loc[("b", "d"), "better"] == TIE
    for _, row in table.iterrows():  # a tie exactly where the interval holds 0
        holds_zero = not row["diff low"] > 0 and not row["diff high"] < 0
        assert (row["better"] == TIE) == holds_zero


def test_open_questions_are_undecided_constraints_and_resolvable_ties():
    confirm = pd.concat([
        runs("a", [1, 2, 3], [120.0, 134.0, 125.0], [1.0] * 3, [100.0, 101.0, 102.0]),
        runs("c", [1, 2, 3], [110.0] * 3, [1.0] * 3, [101.0, 101.2, 103.8]),  # a + 1 ± 0.8
        runs("b", [1, 2, 3], [110.0] * 3, [1.0] * 3, [110.0, 111.5, 112.0]),
    ])  # fmt: skip
    rec = [Yardstick(metric="recon", bound=135.0)]
    race = Race(3, 12, 3)
    table = margins(confirm, rec, race.level, race.max_seeds)
    values = per_seed(confirm, "test/iwae_nll")
    questions = open_questions(confirm, table, values, "min", race.level, race.max_seeds)
    assert questions == {"a": ["recon<=135 undecided", "ties with c"], "c": ["ties with a"]}
    assert not open_questions(
        confirm, margins(confirm, rec, race.level, 3), values, "min", race.level, 3
    )  # fmt: skip  (max_seeds spent)


def test_the_race_schedule_sets_the_decision_level():
    assert Race(3, 3, 3).schedule() == [3] and Race(3, 3, 3).level == pytest.approx(0.95)
    assert Race(3, 9, 3).schedule() == [3, 6, 9] and Race(3, 9, 3).level == pytest.approx(
        1 - 0.05 / 3
    )
    assert Race(3, 8, 3).schedule() == [3, 6, 8]
    assert Race.from_params({"study.confirm.seeds": "3"}) == Race(3, 3, 3)  # before racing
    logged = {"study.confirm.seeds": "3", "study.confirm.max_seeds": "6",
              "study.confirm.step": "None"}  # fmt: skip
    assert Race.from_params(logged) == Race(3, 6, 3)
    assert Race(3, 6, 3).level_text() == "97.5% (Bonferroni over 2 looks)"
    race = Race(3, 8, 3, first_seed=1000)
    assert [race.new_seeds(k) for k in range(3)] == [
        [1000, 1001, 1002], [1003, 1004, 1005], [1006, 1007]]  # fmt: skip
