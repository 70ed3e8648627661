"""The feasibility rule, saturation and the constraint values the search sees: pure functions."""

import pytest

from vaestudy.training.feasibility import (
    WORST,
    Yardstick,
    judge,
    own_violations,
    saturated,
    search_constraints,
)

RECON = Yardstick(metric="recon", bound=110)
ACTIVE = Yardstick(metric="active_units", bound=8, direction=">=")
TEST = {"recon": 100.0, "constraint/recon": 100.0, "target/recon": 90.0, "active_units": 10.0}


def test_yardstick_violation_has_the_sign_and_units_of_the_metric():
    assert RECON.violation(100) == -10 and RECON.violation(115) == 5
    assert ACTIVE.violation(10) == -2 and ACTIVE.violation(5) == 3
    assert RECON.violation(None) == float("inf") and not RECON.holds(float("nan"))
    assert RECON.label == "recon<=110" and ACTIVE.label == "active_units>=8"


def test_own_violations_read_value_minus_target():
    assert own_violations(TEST) == {"recon": 10.0}
    assert own_violations({"recon": 3.0}) == {}


@pytest.mark.parametrize(
    "test, rules, sat, own, yardstick, state",
    [
        (TEST, [RECON], [], False, True, "yardstick only"),
        ({**TEST, "target/recon": 105.0}, [RECON], [], True, True, "feasible"),
        ({**TEST, "target/recon": 105.0}, [RECON], ["recon"], False, True, "yardstick only"),
        ({**TEST, "target/recon": 105.0}, [Yardstick(metric="recon", bound=99)], [], True,
         False, "own only"),
        (TEST, [RECON, ACTIVE], [], False, True, "yardstick only"),
        ({"recon": 120.0}, [RECON], [], True, False, "own only"),  # no own constraints
        ({"recon": 100.0}, [], [], True, True, "feasible"),  # no yardstick
        (None, [RECON], [], False, False, "neither"),  # no final test metrics
    ],
)  # fmt: skip
def test_judge(test, rules, sat, own, yardstick, state):
    verdict = judge(test, rules, sat)
    assert (verdict.own, verdict.yardstick, verdict.state) == (own, yardstick, state)
    assert verdict.feasible == (own and yardstick)


def test_search_constraints_by_scope():
    both = search_constraints("both", TEST, [RECON, ACTIVE], ["recon"])
    assert both == {
        "own": 10.0,
        "saturated": 1.0,
        "yardstick:recon<=110": -10.0,
        "yardstick:active_units>=8": -2.0,
    }
    assert set(search_constraints("own", TEST, [RECON])) == {"own", "saturated"}
    assert set(search_constraints("yardstick", TEST, [RECON])) == {"yardstick:recon<=110"}
    assert search_constraints("none", TEST, [RECON]) == {}
    diverged = search_constraints("both", None, [RECON])  # every key the study's trials have
    assert diverged == dict.fromkeys(["own", "saturated", "yardstick:recon<=110"], WORST)
    unconstrained = search_constraints("own", {"kl": 1.0}, [])  # an objective without own
    assert unconstrained == {"own": 0.0, "saturated": 0.0}
    missing = search_constraints("yardstick", {"kl": 1.0}, [RECON])
    assert missing == {"yardstick:recon<=110": WORST}


def points(lams, every=10):
    return [{"step": float(every * (i + 1)), "lambda/recon": lam} for i, lam in enumerate(lams)]


@pytest.mark.parametrize(
    "lams, expected",
    [
        ([1, 2, 5, 100, 100, 100, 100, 100, 100, 100], ["recon"]),  # at the clip since step 30
        ([1, 2, 5, 10, 20, 40, 80, 100, 100, 100], ["recon"]),  # since step 70: last 30%
        ([1, 2, 5, 10, 20, 40, 80, 90, 100, 100], ["recon"]),  # since step 80: exactly 20%
        ([1, 2, 5, 10, 20, 40, 80, 90, 99, 100], []),  # since step 90 only
        ([100, 100, 100, 100, 100, 100, 100, 100, 50, 100], []),  # left the clip at step 90
        ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], []),
    ],
)
def test_saturated_means_at_the_clip_for_the_last_fifth_of_training(lams, expected):
    assert saturated(points(lams), ["recon"], clip=100.0, total_steps=100) == expected


def test_saturation_counts_against_the_planned_steps():
    # at the clip from step 20 (the start of the interval ending at 30) to 50: 30 steps,
    # short of 20% of 200 planned steps, enough of 100
    history = points([1, 1, 100, 100, 100])
    assert saturated(history, ["recon"], clip=100.0, total_steps=200) == []
    assert saturated(history, ["recon"], clip=100.0, total_steps=100) == ["recon"]
    assert saturated(history, ["mmd"], clip=100.0, total_steps=100) == []  # not logged


@pytest.mark.parametrize("metric", ["test/recon", "val/recon"])
def test_a_yardstick_rule_names_its_metric_without_a_split(metric):
    with pytest.raises(ValueError, match="without its split.*validation split.*test split"):
        Yardstick(metric=metric, bound=110)
