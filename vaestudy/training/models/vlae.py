"""Variational Ladder Autoencoder (Zhao, Song, Ermon 2017), four latent levels.

Images of 28×28 px with any number of channels (the rungs' sizes are fixed); other sizes are
refused. Encoder: a conv ladder 28→13→6→3→1; each rung emits one Gaussian latent z_l, lowest
level first.
Decoder: the most abstract latent (z_4, from the deepest rung) enters at the top (1x1) and each
lower latent is added to the feature map of its own rung on the way up to 28x28 logits. (The seed
notebook fed the shallowest latent in at the top; this follows the paper's ordering.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# (channels multiplier, spatial size) of the rung after each encoder conv.
_RUNGS = [(1, 13), (2, 6), (4, 3), (8, 1)]


class _Rung(nn.Module):
    """Feature map of one rung -> (mu, logvar) of that level's latent."""

    def __init__(self, channels: int, size: int, hidden: int, latent_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * size * size, hidden), nn.SELU()
        )
        self.head = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(h)).chunk(2, dim=-1)
        return mu, logvar


class LadderEncoder(nn.Module):
    def __init__(
        self, latent_dim: int, shape: tuple[int, int, int], hidden: int = 256, channels: int = 16
    ) -> None:
        super().__init__()
        c = channels
        self.convs = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(shape[0], c, 4, stride=2), nn.SELU()),  # 28 -> 13
                nn.Sequential(nn.Conv2d(c, 2 * c, 3, stride=2), nn.SELU()),  # 13 -> 6
                nn.Sequential(nn.Conv2d(2 * c, 4 * c, 4, stride=1), nn.SELU()),  # 6 -> 3
                nn.Sequential(nn.Conv2d(4 * c, 8 * c, 3, stride=1), nn.SELU()),  # 3 -> 1
            ]
        )
        self.rungs = nn.ModuleList([_Rung(m * c, size, hidden, latent_dim) for m, size in _RUNGS])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mus, logvars = [], []
        h = x
        for conv, rung in zip(self.convs, self.rungs, strict=True):
            h = conv(h)
            mu, logvar = rung(h)
            mus.append(mu)
            logvars.append(logvar)
        return torch.cat(mus, -1), torch.cat(logvars, -1)


class _Inject(nn.Module):
    """z_l -> a feature map of the rung's shape, added to the top-down path."""

    def __init__(self, latent_dim: int, hidden: int, channels: int, size: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.SELU(),
            nn.Linear(hidden, channels * size * size),
            nn.SELU(),
            nn.Unflatten(-1, (channels, size, size)),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.body(z)


class LadderDecoder(nn.Module):
    def __init__(
        self, latent_dim: int, shape: tuple[int, int, int], hidden: int = 256, channels: int = 16
    ) -> None:
        super().__init__()
        c = channels
        self.latent_dim = latent_dim
        self.inject = nn.ModuleList(
            [_Inject(latent_dim, hidden, m * c, size) for m, size in _RUNGS]
        )
        self.up = nn.ModuleList(
            [
                nn.Sequential(nn.ConvTranspose2d(c, shape[0], 4, stride=2)),  # 13 -> 28 logits
                nn.Sequential(nn.ConvTranspose2d(2 * c, c, 3, stride=2), nn.SELU()),  # 6 -> 13
                nn.Sequential(nn.ConvTranspose2d(4 * c, 2 * c, 4, stride=1), nn.SELU()),  # 3 -> 6
                nn.Sequential(nn.ConvTranspose2d(8 * c, 4 * c, 3, stride=1), nn.SELU()),  # 1 -> 3
            ]
        )

    def forward(self, z: Tensor) -> Tensor:
        zs = z.split(self.latent_dim, dim=-1)
        h = self.up[3](self.inject[3](zs[3]))
        for level in (2, 1, 0):
            h = self.up[level](h + self.inject[level](zs[level]))
        return h
