"""A network of one's own: a residual MLP (pre-LayerNorm blocks, GELU) for images of any shape.

    encoder: x -> Linear(C·H·W, width) -> depth × [h + Linear(GELU(LayerNorm(h)))] -> (μ, log σ²)
    decoder: z[, one-hot label] -> Linear(width) -> depth × the same blocks -> C×H×W logits

vaestudy calls `ResidualMlp(cfg, shape, n_classes)` and trains the `VAE` it returns; the study
file configures it like a built-in net (`model: {name: resmlp, width: 256, depth: 2}`).
"""

from __future__ import annotations

import math

from pydantic import Field
from torch import Tensor, nn

from vaestudy.config.run import ModelConfigBase
from vaestudy.training.models import VAE


class ResidualMlpConfig(ModelConfigBase):
    width: int = Field(256, gt=0, description="hidden width of every block")
    depth: int = Field(2, ge=1, description="residual blocks in the encoder and in the decoder")


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(width), nn.GELU(), nn.Linear(width, width))

    def forward(self, h: Tensor) -> Tensor:
        return h + self.body(h)


def _tower(n_in: int, n_out: int, cfg: ResidualMlpConfig) -> nn.Sequential:
    blocks = [_Block(cfg.width) for _ in range(cfg.depth)]
    head = [nn.LayerNorm(cfg.width), nn.GELU(), nn.Linear(cfg.width, n_out)]
    return nn.Sequential(nn.Linear(n_in, cfg.width), *blocks, *head)


class _Encoder(nn.Module):
    def __init__(self, cfg: ResidualMlpConfig, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), _tower(math.prod(shape), 2 * cfg.latent_dim, cfg))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.body(x).chunk(2, dim=-1)
        return mu, logvar


class ResidualMlp(VAE):
    """The VAE: a residual MLP encoder and decoder; a conditional decoder also sees the label."""

    config = ResidualMlpConfig

    def __init__(self, cfg: ResidualMlpConfig, shape: tuple[int, int, int], n_classes: int) -> None:
        c = n_classes if cfg.conditional else 0
        decoder = nn.Sequential(
            _tower(cfg.latent_dim + c, math.prod(shape), cfg), nn.Unflatten(-1, shape)
        )
        super().__init__(_Encoder(cfg, shape), decoder, [cfg.latent_dim], c)
