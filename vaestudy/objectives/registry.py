"""Objective registry: build an objective from its config."""

from __future__ import annotations

from vaestudy.likelihoods import NegLogLik
from vaestudy.objectives.base import Objective, Output, Pass
from vaestudy.objectives.elbo import WeightedElbo
from vaestudy.objectives.geco import Geco
from vaestudy.objectives.icvae import InvariantCvae
from vaestudy.objectives.lagvae import LagrangianVae

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


def build_objective(cfg, nll: NegLogLik) -> Objective:
    return _REGISTRY[cfg.name](cfg, nll)
