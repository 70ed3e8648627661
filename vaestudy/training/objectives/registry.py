"""Build an objective from its config: a built-in by its name, a user's objective by the entry
point or import path its config names (`vaestudy.config.plugins`)."""

from __future__ import annotations

from vaestudy.config.objectives import ObjectiveConfigBase
from vaestudy.config.plugins import load
from vaestudy.training.likelihoods import NegLogLik
from vaestudy.training.objectives.base import Objective, Output, Pass
from vaestudy.training.objectives.elbo import WeightedElbo
from vaestudy.training.objectives.geco import Geco
from vaestudy.training.objectives.icvae import InvariantCvae
from vaestudy.training.objectives.lagvae import LagrangianVae

__all__ = ["Objective", "Output", "Pass", "build_objective"]

_REGISTRY: dict[str, type[Objective]] = {
    "elbo": WeightedElbo,
    "beta_vae": WeightedElbo,
    "kl_annealing": WeightedElbo,
    "geco": Geco,
    "lagvae": LagrangianVae,
    "infovae": LagrangianVae,
    "icvae": InvariantCvae,
}


def build_objective(cfg: ObjectiveConfigBase, nll: NegLogLik) -> Objective:
    """The objective `cfg` configures, with `nll` as its pixel model's −log p(x|z)."""
    cls = _REGISTRY.get(cfg.name) or load("objectives", cfg.name, list(_REGISTRY))
    return cls(cfg, nll)
