"""Model architectures: the built-in nets (mlp, conv, vlae), each sized from the data's image
shape, and a user's own network, found by the name `model.name` gives (entry point group
`vaestudy.training.models` or import path `mypkg.nets:MyNet`).

A user's network is a callable `build(cfg, shape, n_classes) -> VAE` (a function or a class)
with an attribute `config`, its config class (a subclass of `vaestudy.config.run.ModelConfigBase`):
`shape` is one image's (C, H, W), `n_classes` the number of labels (0: unlabelled); a
conditional decoder (`cfg.conditional`) takes `latent_dim + n_classes` inputs (`VAE.decode`
appends the one-hot label).
"""

from __future__ import annotations

from vaestudy.config.plugins import load
from vaestudy.config.run import BUILTIN_MODELS, ModelConfig, ModelConfigBase
from vaestudy.training.models.base import VAE
from vaestudy.training.models.conv import ConvDecoder, ConvEncoder
from vaestudy.training.models.mlp import MlpDecoder, MlpEncoder
from vaestudy.training.models.vlae import LadderDecoder, LadderEncoder

__all__ = ["VAE", "build_model"]

LADDER_LEVELS = 4
MNIST_SHAPE = (1, 28, 28)


def build_model(
    cfg: ModelConfigBase, shape: tuple[int, int, int] = MNIST_SHAPE, n_classes: int = 10
) -> VAE:
    """Build the configured VAE for images of `shape` (C, H, W); `n_classes` sizes the one-hot
    label of a conditional decoder."""
    if problem := cfg.shape_problem(shape):
        raise ValueError(problem)
    d = cfg.latent_dim
    if cfg.conditional and not n_classes:
        raise ValueError("model.conditional needs labelled data; this dataset has no labels")
    c = n_classes if cfg.conditional else 0
    if not isinstance(cfg, ModelConfig):  # a user's network
        return load("models", cfg.name, list(BUILTIN_MODELS))(cfg, shape, n_classes)
    if cfg.name == "mlp":
        return VAE(MlpEncoder(d, cfg.hidden, shape), MlpDecoder(d + c, cfg.hidden, shape), [d], c)
    if cfg.name == "conv":
        return VAE(ConvEncoder(d, shape), ConvDecoder(d + c, shape), [d], c)
    if c:
        raise ValueError("model.conditional is not supported by the vlae ladder")
    hidden = min(cfg.hidden, 256)
    encoder, decoder = LadderEncoder(d, shape, hidden), LadderDecoder(d, shape, hidden)
    return VAE(encoder, decoder, [d] * LADDER_LEVELS)
