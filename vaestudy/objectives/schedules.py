"""KL-coefficient schedules β(t) as tensor functions of the step t (so they run on the device).

With N = `steps`, a = `start`, b = `end`:
- constant: β = b.
- linear (the DeepMind tutorial's warm-up; Bowman et al. 2016): β = a + (b − a)·min(1, t/N).
- sigmoid: β = a + (b − a)·σ(k·(t − N/2)/N), k = `steepness`; β(N/2) is the midpoint.
- cyclical (Fu et al. 2019, "Cyclical Annealing Schedule"): cycles of N steps; within a cycle at
  position τ = (t mod N)/N, β = a + (b − a)·min(1, τ/R), R = `ratio`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaestudy.objectives.configs import ScheduleConfig


def schedule_value(cfg: ScheduleConfig, step: Tensor) -> Tensor:
    t = step.float()
    n = float(cfg.steps)
    if cfg.kind == "constant":
        frac = torch.ones_like(t)
    elif cfg.kind == "linear":
        frac = (t / n).clamp(max=1.0)
    elif cfg.kind == "sigmoid":
        frac = torch.sigmoid(cfg.steepness * (t - n / 2) / n)
    else:  # cyclical
        tau = torch.remainder(t, n) / n
        frac = (tau / cfg.ratio).clamp(max=1.0)
    return cfg.start + (cfg.end - cfg.start) * frac
