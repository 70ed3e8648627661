"""Lagrange multipliers: one mechanism for every constrained objective.

A constrained objective minimises f(θ) subject to D_i(θ) <= ε_i and trains the Lagrangian

    L(θ, λ) = f(θ) + Σ_i λ_i · (D_i(θ) − ε_i),      λ_i >= 0,

descending in θ and ascending in λ. `C_i = D_i − ε_i` is the constraint value (same unit as D_i,
e.g. nats per example); C_i <= 0 means the constraint holds. Update rules:

- ``gradient``: projected gradient ascent. ∂L/∂λ_i = C_i exactly (L is linear in λ), so no
  backward pass is needed: the gradient is written into λ and a torch optimizer with
  ``maximize=True`` steps it (the Lagrangian VAE of Zhao et al. 2018 uses RMSprop, lr 1e-4),
  then λ is clipped to [min, max] (their code: [0.001, 100]).
- ``geco``: Rezende & Viola 2018 ("Taming VAEs", Alg. 1). C_ma <- α·C_ma + (1 − α)·C (C_ma = C on
  the first step) and λ <- λ·exp(ν·C_ma), clipped to [min, max]. The loss uses the straight-
  through constraint C + stopgrad(C_ma − C), see `straight_through`.
- ``nupi``: νPI (Sohrabi, Ramirez, Zhang, Lacoste-Julien, Gallego-Posada, ICML 2024, "On PI
  Controllers for Updating Lagrange Multipliers in Constrained Optimization"), in its recursive
  projected form: ξ_t = ν·ξ_{t−1} + (1 − ν)·C_t (ξ_{−1} = 0) and
  λ_{t+1} = Π[λ_t + κ_i·C_t + κ_p·(ξ_t − ξ_{t−1})]. Unprojected, this is their
  λ_{t+1} = λ_0 + κ_i·Σ_τ C_τ + κ_p·ξ_t: the integral term is gradient ascent at rate κ_i; the
  proportional term reacts to the (smoothed) violation itself, damping the oscillation of plain
  ascent. κ_p = 0 gives gradient ascent with SGD.
- ``augmented``: the augmented Lagrangian for inequality constraints (Rockafellar 1973; Nocedal
  & Wright, Numerical Optimization, 2nd ed., §17.4): the primal loss is
  f + Σ_i (max(0, λ_i + ρ·C_i)² − λ_i²)/(2ρ), whose gradient in θ is max(0, λ_i + ρ·C_i)·∇C_i
  (`penalty` adds the difference from λ·C), and the dual step is λ_i <- Π[λ_i + ρ·C_i].
- ``frozen``: λ stays at its initial value (InfoVAE).

All state (λ, C_ma, optimizer moments) lives on the training device as module state, so updates
need no host sync and `state_dict()` carries everything a checkpoint needs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vaestudy.config.objectives import MultiplierConfig

_OPTIMIZERS = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}


class Multipliers(nn.Module):
    """A vector of K non-negative multipliers with a configured update rule."""

    def __init__(self, names: list[str], cfg: MultiplierConfig) -> None:
        super().__init__()
        init = cfg.init if isinstance(cfg.init, list) else [cfg.init] * len(names)
        if len(init) != len(names):
            raise ValueError(f"multiplier.init needs {len(names)} values ({names}), got {init}")
        self.names = list(names)
        self.cfg = cfg
        self.value = nn.Parameter(torch.tensor(init, dtype=torch.float32), requires_grad=False)
        self.register_buffer("ema", torch.zeros(len(names)))
        self.register_buffer("xi", torch.zeros(len(names)))  # νPI's smoothed error
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._optimizer: torch.optim.Optimizer | None = None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        # Built lazily so that it holds the parameter after `.to(device)`. One small tensor: the
        # single-tensor update is cheaper than the default multi-tensor (foreach) path.
        if self._optimizer is None:
            cls = _OPTIMIZERS[self.cfg.optimizer]
            self._optimizer = cls([self.value], lr=self.cfg.lr, maximize=True, foreach=False)
        return self._optimizer

    def next_ema(self, c: Tensor) -> Tensor:
        """The moving average after observing constraint values `c` (no state change)."""
        a = self.cfg.ema
        return torch.where(self.seen, a * self.ema + (1 - a) * c.detach(), c.detach())

    def penalty(self, c: Tensor) -> Tensor:
        """What the augmented Lagrangian adds to the loss's λ·C (zero for the other rules):
        Σ_i (max(0, λ_i + ρ·C_i)² − λ_i²)/(2ρ) − λ_i·C_i, with the gradient of C."""
        if self.cfg.update != "augmented":
            return c.new_zeros(())
        lam, rho = self.value.detach(), self.cfg.rho
        return ((torch.relu(lam + rho * c).pow(2) - lam.pow(2)) / (2 * rho) - lam * c).sum()

    def straight_through(self, c: Tensor) -> Tensor:
        """GECO's C + stopgrad(C_ma − C): the value of the moving average, the gradient of C."""
        if self.cfg.update != "geco":
            return c
        return c + (self.next_ema(c) - c).detach()

    @torch.no_grad()
    def update(self, c: Tensor) -> None:
        """Observe the batch's constraint values C = D − ε and move λ by the configured rule."""
        c = c.detach().float()
        self.ema.copy_(self.next_ema(c))
        self.seen.fill_(True)
        self.steps.add_(1)
        if self.cfg.update == "frozen":
            return
        active = self.steps > self.cfg.warmup_steps
        if self.cfg.update == "geco":
            proposal = self.value * torch.exp(self.cfg.lr * self.ema)
            self.value.copy_(torch.where(active, proposal, self.value))
        elif self.cfg.update == "nupi":
            nu = self.cfg.nu
            xi = nu * self.xi + (1 - nu) * c
            step = self.cfg.lr * c + self.cfg.kp * (xi - self.xi)
            self.value.add_(torch.where(active, step, torch.zeros_like(step)))
            self.xi.copy_(torch.where(active, xi, self.xi))
        elif self.cfg.update == "augmented":
            step = self.cfg.rho * c
            self.value.add_(torch.where(active, step, torch.zeros_like(step)))
        else:
            self.value.grad = torch.where(active, c, torch.zeros_like(c))
            self.optimizer.step()
            self.value.grad = None
        self.value.clamp_(self.cfg.min, self.cfg.max)

    def named_values(self) -> dict[str, Tensor]:
        return {name: self.value[i] for i, name in enumerate(self.names)}

    def get_extra_state(self) -> Any:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
