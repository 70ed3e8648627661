"""Build an objective from its config: a built-in by its name, a user's objective by the entry
point or import path its config names (`vaestudy.plugins`)."""

from __future__ import annotations

from vaestudy.likelihoods import NegLogLik
from vaestudy.objectives.base import Objective, Output, Pass
from vaestudy.objectives.configs import ObjectiveConfigBase
from vaestudy.objectives.elbo import WeightedElbo
from vaestudy.objectives.geco import Geco
from vaestudy.objectives.icvae import InvariantCvae
from vaestudy.objectives.lagvae import LagrangianVae
from vaestudy.plugins import load

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
