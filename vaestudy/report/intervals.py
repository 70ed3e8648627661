"""How sure: 95% intervals for the rates and means a study reports.

- A rate k/n (runs that satisfy their constraints): the Wilson score interval (Wilson 1927;
  Brown, Cai & DasGupta 2001 recommend it over the normal approximation for small n), with
  z = Φ⁻¹(0.975): centre (k + z²/2)/(n + z²), half-width z·sqrt(k(n−k)/n + z²/4)/(n + z²).
  5/5 gives [0.57, 1]; 2/2 gives [0.34, 1]: two seeds say very little.
- A mean of n runs: mean ± t_{0.975, n−1}·s/√n (Student's t; t = 2.776 for n = 5, 12.71 for
  n = 2). One run has no interval (NaN half-width).
- Margins and paired differences between variants: `vaestudy.report.verdicts`.

Units are those of the metric (nats per example for KL, recon, IWAE NLL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

LEVEL = 0.95
_Z = NormalDist().inv_cdf(0.5 + LEVEL / 2)  # 1.96


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def text(self, digits: int = 2) -> str:
        if math.isnan(self.low):
            return "[n/a]"
        return f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def wilson(k: int, n: int) -> Interval:
    """The 95% Wilson score interval of a rate of k successes in n runs ([0, 1] for n = 0)."""
    if n == 0:
        return Interval(0.0, 1.0)
    z2 = _Z * _Z
    centre = (k + z2 / 2) / (n + z2)
    half = _Z * math.sqrt(k * (n - k) / n + z2 / 4) / (n + z2)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class MeanCI:
    """A mean of n runs with its 95% t interval: mean ± half."""

    mean: float
    half: float
    n: int


def mean_ci(values: Sequence[float]) -> MeanCI:
    """The mean of `values` (finite ones) with its 95% Student-t half-width."""
    xs = [float(v) for v in values if math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return MeanCI(math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n == 1:
        return MeanCI(mean, math.nan, 1)
    # scipy.special, not scipy.stats: a read command should not wait 0.6 s on an import
    from scipy.special import stdtrit  # Student t quantile

    sd = math.sqrt(_variance(xs))
    return MeanCI(mean, float(stdtrit(n - 1, 0.5 + LEVEL / 2)) * sd / math.sqrt(n), n)


def _variance(xs: list[float]) -> float:
    """The unbiased sample variance (n - 1 in the denominator)."""
    mean = sum(xs) / len(xs)
    return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
