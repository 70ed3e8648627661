"""Pixel likelihoods: −log p(x|z) per example, in nats, from decoder logits; and the seed's
squared error (`mse_sum`), which is not one."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from vaestudy.config.run import DataConfig

NegLogLik = Callable[[Tensor, Tensor], Tensor]


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """−Σ_pixels [x log p + (1−x) log(1−p)], p = sigmoid(logits); x may be in [0, 1]."""
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return nll.flatten(1).sum(1)


def gaussian_nll(sigma: float) -> NegLogLik:
    """−Σ_pixels log N(x; sigmoid(logits), sigma²) with a fixed sigma."""
    const = math.log(sigma) + 0.5 * math.log(2 * math.pi)

    def nll(logits: Tensor, x: Tensor) -> Tensor:
        sq = (x - logits.sigmoid()).pow(2) / (2 * sigma**2) + const
        return sq.flatten(1).sum(1)

    return nll


def mse_sum(logits: Tensor, x: Tensor) -> Tensor:
    """Σ_pixels (x − sigmoid(logits))²: the Lagrangian VAE seed's distortion (a sigmoid decoder,
    `mse_loss(reduction='sum') / batch`). Squared intensity, not nats: it equals the Gaussian
    NLL at σ² = ½ minus 784·½·log π ≈ 448.7 per example."""
    return (x - logits.sigmoid()).pow(2).flatten(1).sum(1)


def make_nll(data: DataConfig) -> NegLogLik:
    if data.pixels == "gaussian":
        return gaussian_nll(data.gaussian_sigma)
    return mse_sum if data.pixels == "mse" else bernoulli_nll
