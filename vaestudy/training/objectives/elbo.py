"""The ELBO family: plain ELBO, β-VAE and KL annealing, all `recon + β(t)·KL` (nats per example).

- ELBO (Kingma & Welling 2014): β = 1.
- β-VAE (Higgins et al. 2017): fixed β.
- KL annealing (Bowman et al. 2016; Fu et al. 2019): β(t) from a schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import Objective, Output
from vaestudy.training.objectives.schedules import schedule_value


class WeightedElbo(Objective):
    def weight(self, step: Tensor) -> Tensor:
        """β(t): the schedule's value (KL annealing), β (β-VAE) or 1 (ELBO)."""
        name = self.cfg.name
        if name == "kl_annealing":
            return schedule_value(self.cfg.schedule, step)
        return self.beta if name == "beta_vae" else torch.ones((), device=step.device)

    def forward(self, model: VAE, x: Tensor, y: Tensor | None, step: Tensor) -> Output:
        p = self.vae_pass(model, x, y)
        metrics = self.elbo_metrics(p, model.levels)
        beta = self.weight(step)
        metrics["coef/beta"] = beta
        loss = metrics["recon"] + beta * metrics["kl"]
        return Output(loss, metrics)
