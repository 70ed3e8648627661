"""KL-coefficient schedules β(t) as tensor functions of the step t (so they run on the device).

With N = `steps`, a = `start`, b = `end`:
- constant: β = b.
- linear (the DeepMind tutorial's warm-up; Bowman et al. 2016): β = a + (b − a)·min(1, t/N).
- sigmoid: β = a + (b − a)·s(t), s(t) = (σ(k·(t/N − ½)) − σ(−k/2)) / (σ(k/2) − σ(−k/2)) for
  0 <= t <= N (then 1), k = `steepness`: the logistic curve rescaled so that β(0) = a and
  β(N) = b exactly (unscaled, k = 10 stops at 0.7% and 99.3% of the way).
- cyclical (Fu et al. 2019, "Cyclical Annealing Schedule", their `frange_cycle_linear`): with
  `cycles` = M, the first N steps hold M cycles of length N/M, and β = b afterwards; without
  `cycles`, cycles of N steps go on for ever. Within a cycle at position τ ∈ [0, 1),
  β = a + (b − a)·min(1, τ/R), R = `ratio` (Fu et al.: M = 4, R = 0.5).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaestudy.config.objectives import ScheduleConfig


def schedule_value(cfg: ScheduleConfig, step: Tensor) -> Tensor:
    t = step.float()
    n = float(cfg.steps)
    if cfg.kind == "constant":
        frac = torch.ones_like(t)
    elif cfg.kind == "linear":
        frac = (t / n).clamp(max=1.0)
    elif cfg.kind == "sigmoid":
        k = cfg.steepness
        lo, hi = 1 / (1 + math.exp(k / 2)), 1 / (1 + math.exp(-k / 2))  # σ(−k/2), σ(k/2)
        raw = torch.sigmoid(k * ((t / n).clamp(max=1.0) - 0.5))
        frac = ((raw - lo) / (hi - lo)).clamp(0.0, 1.0)
    else:  # cyclical
        length = n / cfg.cycles if cfg.cycles else n
        tau = torch.remainder(t, length) / length
        frac = (tau / cfg.ratio).clamp(max=1.0)
        if cfg.cycles:
            frac = torch.where(t >= n, torch.ones_like(frac), frac)
    return cfg.start + (cfg.end - cfg.start) * frac
