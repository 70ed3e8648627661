"""GECO (Rezende & Viola 2018, "Taming VAEs", arXiv:1810.00597, Alg. 1).

    minimise  KL[q(z|x)||p(z)]  subject to  E[−log p(x|z)] <= κ     (nats per example)

Lagrangian KL + λ·C with C = recon − κ. The loss uses the straight-through constraint
C + stopgrad(C_ma − C) (its value is the moving average, its gradient that of C) and λ follows
λ <- λ·exp(ν·C_ma) (`multiplier.update: geco`, ν = `multiplier.lr`). With `multiplier.update:
gradient` it is the DeepMind tutorial's variant (λ by gradient ascent, reconstruction target
α = −κ on E[log p(x|z)]).
"""

from __future__ import annotations

from torch import Tensor

from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import ConstrainedObjective, Output


class Geco(ConstrainedObjective):
    def forward(self, model: VAE, x: Tensor, y: Tensor | None, step: Tensor) -> Output:
        p = self.vae_pass(model, x, y)
        metrics = self.elbo_metrics(p, model.levels)
        values, targets = metrics["recon"].reshape(1), self.kappa.reshape(1)
        term, c = self.lagrangian(metrics, values, targets, straight_through=True)
        return Output(metrics["kl"] + term, metrics, constraints=c)
