"""MLP encoder/decoder of the Lagrangian VAE seed: 784-512-128-z and back (ReLU)."""

from __future__ import annotations

from torch import Tensor, nn

IMAGE = (1, 28, 28)
PIXELS = 28 * 28


class MlpEncoder(nn.Module):
    def __init__(self, latent_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(PIXELS, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 4),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden // 4, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


class MlpDecoder(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden // 4),
            nn.ReLU(),
            nn.Linear(hidden // 4, hidden),
            nn.ReLU(),
            nn.Linear(hidden, PIXELS),
            nn.Unflatten(-1, IMAGE),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)
