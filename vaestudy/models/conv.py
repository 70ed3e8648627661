"""Small conv encoder/decoder of the DeepMind VAE tutorial seed (28x28 -> 7x7 -> z and back)."""

from __future__ import annotations

from torch import Tensor, nn


class ConvEncoder(nn.Module):
    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(8, 16, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 5, stride=1, padding=2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(32 * 7 * 7, 2 * latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=-1)
        return mu, logvar


class ConvDecoder(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, 7 * 7 * 64),
            nn.ReLU(),
            nn.Unflatten(-1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 5, stride=2, padding=2, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 5, stride=2, padding=2, output_padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)
