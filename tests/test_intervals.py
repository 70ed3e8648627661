"""The 95% intervals of rates and means on known inputs."""

import math

import pytest

from vaestudy.report.intervals import mean_ci, wilson


@pytest.mark.parametrize(
    "k, n, low, high",
    [(5, 5, 0.566, 1.0), (2, 2, 0.342, 1.0), (0, 3, 0.0, 0.562), (3, 6, 0.188, 0.812)],
)
def test_wilson_interval(k, n, low, high):
    interval = wilson(k, n)
    assert interval.low == pytest.approx(low, abs=1e-3) and interval.high == pytest.approx(
        high, abs=1e-3
    )


def test_wilson_of_no_runs_says_nothing():
    assert (wilson(0, 0).low, wilson(0, 0).high) == (0.0, 1.0)


def test_mean_ci_uses_student_t():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # s = sqrt(2.5), t(0.975, 4) = 2.776
    assert ci.mean == 3.0 and ci.half == pytest.approx(
        2.776 * math.sqrt(2.5) / math.sqrt(5), rel=1e-3
    )
    two = mean_ci([10.0, 12.0])  # t(0.975, 1) = 12.71, s = sqrt(2)
    assert two.half == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), rel=1e-3)
    assert math.isnan(mean_ci([7.0]).half) and mean_ci([7.0, math.nan]).n == 1
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)


@pytest.mark.filterwarnings("ignore:Precision loss")  # scipy's, on the constant sample
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([100.0, 101.0, 102.0], [110.0, 111.0, 112.0]),
        ([100.0, 101.0, 102.0], [101.0, 103.0, 99.0]),
        ([1.0, 1.0, 1.0], [0.5, 1.5, 1.2, 0.9]),  # one side constant
        ([3.1, 2.9, 3.4, 2.2, 3.8, 3.0], [2.0, 4.5]),
    ],
)
def test_t_intervals_are_scipy_stats(a, b):
    """Computed from scipy.special (a lighter import): scipy.stats' values to 1e-12."""
    from scipy import stats

    half = stats.t.ppf(0.975, len(b) - 1) * stats.sem(b)
    assert mean_ci(b).half == pytest.approx(half, rel=1e-12)
