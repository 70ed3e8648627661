"""Invariant conditional VAE (Moyer, Gao, Brekelmans, Ver Steeg, Galstyan 2018, "Invariant
Representations without Adversarial Training", NeurIPS).

The decoder sees z and a one-hot label c. Per example, in nats:

    (1 + λ)·E[−log p(x|z,c)] + β·KL[q(z|x)||p(z)] + λ·KL[q(z|x)||q(z)]

The last term is bounded by the batch's mean pairwise Gaussian KL (1/B)Σ_j KL[q(z|x_i)||q(z|x_j)]
(`divergences.marginal_kl_bound`; the corrected form, without the first preprint's extra term).
λ is fixed (`multiplier.update: frozen`) unless `epsilon` is set: then it is the multiplier of
KL[q(z|x)||q(z)] <= epsilon and moves by the configured rule.
"""

from __future__ import annotations

from torch import Tensor

from vaestudy.training.divergences import marginal_kl_bound
from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import ConstrainedObjective, Output


class InvariantCvae(ConstrainedObjective):
    def forward(self, model: VAE, x: Tensor, y: Tensor | None, step: Tensor) -> Output:
        p = self.vae_pass(model, x, y)
        metrics = self.elbo_metrics(p, model.levels)
        marginal = marginal_kl_bound(p.mu, p.logvar).mean()
        lam = self.multipliers.value.detach()[0]
        loss = (1 + lam) * metrics["recon"] + self.beta * metrics["kl"] + lam * marginal
        metrics["kl_marginal"] = marginal
        metrics["coef/beta"] = self.beta
        metrics["lambda/invariance"] = self.multipliers.value[0]
        if self.cfg.epsilon is None:
            return Output(loss, metrics)
        values = marginal.reshape(1)
        targets = self.epsilon.reshape(1)
        metrics.update(self.constraint_metrics(values, targets))
        c = values - targets
        return Output(loss + self.multipliers.penalty(c), metrics, constraints=c.detach())
