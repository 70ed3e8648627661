"""Lagrangian VAE (Zhao, Song, Ermon 2018, "The Information Autoencoding Family", arXiv:1806.06514;
code: ermongroup/lagvae) and InfoVAE (the same loss with λ frozen).

Per batch (nats per example): nll = E[−log p(x|z)], KL = KL[q(z|x)||p(z)] (one-sample estimate
log q − log p by default, as the original code), MMD = `mmd_scale`·MMD²(z, N(0, I)).
Constraints: D1 = nll + KL = −ELBO <= ε1 and D2 = MMD <= ε2. With α = `mi`:

    α <= 0:  λ1·nll + (λ1 − α)·KL + λ2·MMD − λ1·ε1 − λ2·ε2
    α  > 0:  (λ1 + α)·nll + λ1·KL + λ2·MMD − λ1·ε1 − λ2·ε2

i.e. f + λ·(D − ε) with f = −α·KL (α <= 0: prefer low mutual information) or α·nll (α > 0:
prefer high mutual information). λ = (λ1, λ2) by gradient ascent (RMSprop, lr 1e-4, clipped to
[0.001, 100]) for the Lagrangian VAE, fixed for InfoVAE (then ε only shifts the loss).
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaestudy.training.divergences import mmd
from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import ConstrainedObjective, Output


class LagrangianVae(ConstrainedObjective):
    def forward(self, model: VAE, x: Tensor, y: Tensor | None, step: Tensor) -> Output:
        p = self.vae_pass(model, x, y)
        metrics = self.elbo_metrics(p, model.levels)
        nll, kl = metrics["recon"], metrics["kl"]
        scaled_mmd = self.cfg.mmd_scale * mmd(p.z, torch.randn_like(p.z))
        values = torch.stack([nll + kl, scaled_mmd])
        targets = self.epsilon
        alpha = self.mi
        preference = torch.where(alpha > 0, alpha * nll, -alpha * kl)
        metrics["coef/mi"] = alpha
        term, c = self.lagrangian(metrics, values, targets)
        return Output(preference + term, metrics, constraints=c)
