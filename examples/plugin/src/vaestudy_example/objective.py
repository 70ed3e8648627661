"""The rate-constrained VAE: the best reconstruction at a given rate.

    minimise  E_q[−log p(x|z)]  subject to  KL[q(z|x)||p(z)] <= ε      (nats per example)

Alemi et al. 2018 ("Fixing a Broken ELBO", ICML, §4) read the β-VAE as this problem's Lagrangian
with a fixed multiplier, recon + β·(KL − ε), whose β sets the rate only indirectly. Here the
multiplier λ = β is learned: the loss is recon + λ·(KL − ε) (plus the augmented Lagrangian's
term under `update: augmented`), and λ moves by the configured rule after each step, so the
rate is held at ε, the constraint `rate`, nats per example.

Everything vaestudy does with a built-in constraint follows from `constraint_names` and
`hyper_fields`: the multiplier, the `constraint/rate` and `lambda/rate` trajectories, the
search's constraint value, saturation, feasibility and the report, and packed trials that
differ in ε.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor

from vaestudy.config.objectives import MultiplierConfig, ObjectiveConfigBase
from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import ConstrainedObjective, Output


class RateConfig(ObjectiveConfigBase):
    """`epsilon`: the target rate ε, nats per example; λ starts at `multiplier.init`."""

    constraint_names = ("rate",)
    hyper_fields = ("epsilon",)
    epsilon: float = Field(8.0, gt=0, description="target rate KL[q(z|x)||p(z)], nats per example")
    multiplier: MultiplierConfig = MultiplierConfig(
        init=1.0, update="gradient", optimizer="adam", lr=5e-2, min=0.0, max=100.0
    )


class RateConstrainedVae(ConstrainedObjective):
    config = RateConfig

    def forward(self, model: VAE, x: Tensor, y: Tensor | None, step: Tensor) -> Output:
        p = self.vae_pass(model, x, y)
        metrics = self.elbo_metrics(p, model.levels)
        values, targets = metrics["kl"].reshape(1), self.epsilon.reshape(1)
        term, c = self.lagrangian(metrics, values, targets)  # Σ λ·(KL − ε) and C = KL − ε
        return Output(metrics["recon"] + term, metrics, constraints=c)
