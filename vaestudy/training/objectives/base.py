"""The objective interface every training objective implements.

An objective is a small `nn.Module` over tensors: given the model, a batch (x, y) and the step
counter it returns an `Output` with the loss to minimise and named scalar metrics, all per-example
means in nats:

- `recon`  = E_q[−log p(x|z)]  (distortion),    `kl` = KL[q(z|x)||p(z)]  (rate),
- `elbo`   = −(recon + kl),                     `kl/level<i>` for multi-level latents,
- `coef/<name>` for scheduled or fixed coefficients,
- `constraint/<name>` (the constrained quantity D), `target/<name>` (its bound ε; the constraint
  is D <= ε), `constraint_ma/<name>` (moving average of D) and `lambda/<name>` (multiplier).

Constrained objectives also return `constraints = D − ε` (a [K] tensor) that `update()` hands to
their `Multipliers` after the optimiser step. The config values named in the config class's
`hyper_fields` (targets
and weights such as κ, ε, β) are held as float buffers: the loss reads them as tensors, so the
vectorised trainer (`vaestudy.training.vectorized`) can give each member its own. Nothing here
touches Ray, MLflow or the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vaestudy.training.divergences import gaussian_kl, mc_kl
from vaestudy.training.likelihoods import NegLogLik
from vaestudy.training.models import VAE
from vaestudy.training.multipliers import Multipliers


@dataclass
class Output:
    loss: Tensor
    metrics: dict[str, Tensor]
    constraints: Tensor | None = field(default=None)


@dataclass
class Pass:
    """One reparameterised pass x -> q(z|x) -> z -> p(x|z); per-example tensors."""

    mu: Tensor
    logvar: Tensor
    z: Tensor
    eps: Tensor
    logits: Tensor
    recon: Tensor  # [B] −log p(x|z), nats
    kl_dims: Tensor  # [B, D] per-dimension KL (analytic or one-sample)

    @property
    def kl(self) -> Tensor:
        return self.kl_dims.sum(1)


class Objective(nn.Module):
    """Base class: the shared forward pass, the ELBO metrics and the multiplier bookkeeping."""

    def __init__(self, cfg, nll: NegLogLik) -> None:  # cfg: one of objectives.configs
        super().__init__()
        self.cfg = cfg
        self.nll = nll
        self.multipliers: Multipliers | None = None
        for name in cfg.hyper_fields:  # values held as buffers (None: not registered)
            value = getattr(cfg, name, None)
            if value is not None:
                self.register_buffer(name, torch.tensor(value, dtype=torch.float32))

    def vae_pass(self, model: VAE, x: Tensor, y: Tensor | None) -> Pass:
        mu, logvar = model.encode(x)
        mu, logvar = mu.float(), logvar.float()
        eps = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps
        logits = model.decode(z, y).float()
        recon = self.nll(logits, x)
        kl_dims = mc_kl(z, eps, logvar) if self.cfg.kl == "mc" else gaussian_kl(mu, logvar)
        return Pass(mu, logvar, z, eps, logits, recon, kl_dims)

    @staticmethod
    def elbo_metrics(p: Pass, levels: list[int]) -> dict[str, Tensor]:
        recon, kl = p.recon.mean(), p.kl.mean()
        metrics = {"kl": kl, "recon": recon, "elbo": -(recon + kl)}
        if len(levels) > 1:
            per_level = p.kl_dims.mean(0).split(levels)
            metrics.update({f"kl/level{i + 1}": k.sum() for i, k in enumerate(per_level)})
        return metrics

    def forward(self, model: VAE, x: Tensor, y: Tensor | None, step: Tensor) -> Output:
        raise NotImplementedError

    def update(self, out: Output) -> None:
        """Move the multipliers after the optimiser step (on the device, no host sync)."""
        if self.multipliers is not None and out.constraints is not None:
            self.multipliers.update(out.constraints)


class ConstrainedObjective(Objective):
    """An objective with one Lagrange multiplier per name in its config's `constraint_names`,
    configured by its config's `multiplier` section."""

    multipliers: Multipliers

    def __init__(self, cfg, nll: NegLogLik) -> None:
        super().__init__(cfg, nll)
        self.constraint_names: tuple[str, ...] = cfg.constraint_names
        self.multipliers = Multipliers(list(self.constraint_names), cfg.multiplier)

    def lagrangian(
        self,
        metrics: dict[str, Tensor],
        values: Tensor,
        targets: Tensor,
        straight_through: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """For constraints values[i] <= targets[i] (C = values − targets): the loss's term
        Σ_i λ_i·C_i (λ held constant: the multipliers move in `update`) plus the augmented
        Lagrangian's penalty where configured, and C detached for `Output.constraints`. Adds the
        constraint metrics to `metrics`. `straight_through`: GECO's C + stopgrad(C_ma − C)."""
        c = values - targets
        c_loss = self.multipliers.straight_through(c) if straight_through else c
        term = (self.multipliers.value.detach() * c_loss).sum() + self.multipliers.penalty(c_loss)
        metrics.update(self.constraint_metrics(values, targets))
        return term, c.detach()

    def constraint_metrics(self, values: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Metrics for constraints values[i] <= targets[i], with λ and the moving average."""
        ema = self.multipliers.next_ema(values - targets) + targets
        out: dict[str, Tensor] = {}
        for i, name in enumerate(self.constraint_names):
            out[f"constraint/{name}"] = values[i]
            out[f"target/{name}"] = targets[i]
            out[f"constraint_ma/{name}"] = ema[i]
            out[f"lambda/{name}"] = self.multipliers.value[i]
        return out
