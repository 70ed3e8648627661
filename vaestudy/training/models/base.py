"""The VAE container of every architecture: encode to (mean, log-variance), decode to logits."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class VAE(nn.Module):
    """q(z|x) = N(mu(x), diag exp(logvar(x))), p(z) = N(0, I), p(x|z[, c]) from decoder logits.

    `levels` lists the latent sizes per level (one entry for a flat latent; four for the ladder):
    the latent vector is their concatenation, lowest level first. With `n_classes > 0` the decoder
    also sees a one-hot label c (conditional VAE).
    """

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, levels: list[int], n_classes: int = 0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.levels = list(levels)
        self.latent_dim = sum(levels)
        self.n_classes = n_classes

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes:
            if y is None:
                raise ValueError("this decoder is conditional: it needs labels y")
            # one-hot by comparison, not F.one_hot: that checks its classes on the host, which
            # vmap over per-member labels (`VectorTrainer(batches="own")`) cannot do
            classes = torch.arange(self.n_classes, device=y.device)
            z = torch.cat([z, (y.unsqueeze(-1) == classes).to(z.dtype)], dim=-1)
        return self.decoder(z)
