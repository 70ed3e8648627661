"""Model architectures, built by name from `ModelConfig`."""

from __future__ import annotations

from vaestudy.config import ModelConfig
from vaestudy.models.base import VAE
from vaestudy.models.conv import ConvDecoder, ConvEncoder
from vaestudy.models.mlp import MlpDecoder, MlpEncoder
from vaestudy.models.vlae import LadderDecoder, LadderEncoder

__all__ = ["VAE", "build_model"]

LADDER_LEVELS = 4


def build_model(cfg: ModelConfig, n_classes: int = 10) -> VAE:
    """Build the configured VAE; `n_classes` sizes the one-hot label of a conditional decoder."""
    d = cfg.latent_dim
    c = n_classes if cfg.conditional else 0
    if cfg.name == "mlp":
        return VAE(MlpEncoder(d, cfg.hidden), MlpDecoder(d + c, cfg.hidden), [d], c)
    if cfg.name == "conv":
        return VAE(ConvEncoder(d), ConvDecoder(d + c), [d], c)
    if cfg.name == "vlae":
        if c:
            raise ValueError("model.conditional is not supported by the vlae ladder")
        hidden = min(cfg.hidden, 256)
        return VAE(LadderEncoder(d, hidden), LadderDecoder(d, hidden), [d] * LADDER_LEVELS)
    raise ValueError(f"unknown model {cfg.name!r}")
