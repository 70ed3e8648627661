"""MLP encoder/decoder of the Lagrangian VAE seed: pixels-512-128-z and back (ReLU); any image
shape (C, H, W): 784 pixels for MNIST, 3072 for CIFAR-10."""

from __future__ import annotations

import math

from torch import Tensor, nn


class MlpEncoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 4),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden // 4, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


class MlpDecoder(nn.Module):
    def __init__(self, in_dim: int, hidden: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden // 4),
            nn.ReLU(),
            nn.Linear(hidden // 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(shape)),
            nn.Unflatten(-1, shape),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)
