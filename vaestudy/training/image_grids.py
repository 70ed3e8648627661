"""Image grids of a trained model (torchvision): samples from the prior and reconstructions."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from vaestudy.training.data import DeviceData, images
from vaestudy.training.models import VAE


@torch.no_grad()
def save_samples(model: VAE, path: Path, n: int = 64) -> None:
    """Means of p(x|z) for z ~ N(0, I), in an 8-wide grid (labels cycle for conditional models)."""
    device = next(model.parameters()).device
    z = torch.randn(n, model.latent_dim, device=device)
    y = torch.arange(n, device=device) % model.n_classes if model.n_classes else None
    save_image(model.decode(z, y).float().sigmoid(), path, nrow=8)


@torch.no_grad()
def save_reconstructions(model: VAE, data: DeviceData, path: Path, n: int = 32) -> None:
    """Rows alternate: validation images, then their reconstructions from the posterior mean."""
    x, y = images(data.val_x[:n]), data.val_y[:n]
    mu, _ = model.encode(x)
    recon = model.decode(mu, y if model.n_classes else None).float().sigmoid()
    pairs = torch.cat([torch.cat([x[i : i + 8], recon[i : i + 8]]) for i in range(0, n, 8)])
    save_image(pairs, path, nrow=8)
