"""Divergences between Gaussians and samples, in nats. Pure tensor functions.

Shapes: `mu`, `logvar`, `z`, `eps` are [B, D]; per-dimension results are [B, D] so that callers
can sum over any group of latents (the ladder's levels) or over all of them.

Those built on matrix products (`pairwise_gaussian_kl`, `sq_distances`, `mmd`) run in float32
whatever autocast is active (`in_float32`): under `train.bf16` the networks run in bfloat16,
but the divergences and the constraint values built on them (what the verdict judges) do not.
Each result is born on its inputs' device: nothing here copies from the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
F = TypeVar("F", bound=Callable[..., Tensor])


def in_float32(fn: F) -> F:
    """`fn` with autocast off on its tensors' device and half-precision arguments in float32
    (float32 and float64 ones as they are)."""

    @functools.wraps(fn)
    def wrapper(*args: Tensor) -> Tensor:
        with torch.autocast(args[0].device.type, enabled=False):
            return fn(*(a.float() if a.element_size() < 4 else a for a in args))

    return wrapper  # type: ignore[return-value]


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL[N(mu, diag exp(logvar)) || N(0, I)] per dimension, nats:

    0.5 · (mu² + σ² − 1 − log σ²)   (Kingma & Welling 2014, App. B).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def mc_kl(z: Tensor, eps: Tensor, logvar: Tensor) -> Tensor:
    """One-sample estimate log q(z|x) − log p(z) per dimension, nats, for z = mu + σ·eps:

    log q = −½eps² − ½logvar − ½log2π,  log p = −½z² − ½log2π  ⇒  ½(z² − eps² − logvar).
    Unbiased for the analytic KL; the Lagrangian VAE and VLAE codes use it.
    """
    return 0.5 * (z.pow(2) - eps.pow(2) - logvar)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension, nats."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


@in_float32
def pairwise_gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """[B, B] matrix of KL[q_i || q_j] between the batch's diagonal Gaussians, nats:

    KL_ij = ½ Σ_d ( σ²_id/σ²_jd + (mu_id − mu_jd)²/σ²_jd − 1 + log σ²_jd − log σ²_id ).

    Computed with matrix products (O(B²D) memory-free), as in Moyer et al. 2018's code but
    with the log-determinant term in the right orientation.
    """
    var = logvar.exp()
    inv = 1.0 / var
    trace = var @ inv.T
    mu_sq_inv = mu.pow(2) @ inv.T  # Σ_d mu_id² / σ²_jd
    cross = mu @ (mu * inv).T  # Σ_d mu_id mu_jd / σ²_jd
    own = (mu.pow(2) * inv).sum(1)  # Σ_d mu_jd² / σ²_jd
    mahalanobis = mu_sq_inv - 2 * cross + own[None, :]
    logdet = logvar.sum(1)
    return 0.5 * (trace + mahalanobis - mu.shape[1] + logdet[None, :] - logdet[:, None])


def marginal_kl_bound(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-example upper bound on KL[q(z|x_i) || q(z)] with q(z) ≈ (1/B) Σ_j q(z|x_j), nats:

    KL[q_i || (1/B)Σ_j q_j] <= (1/B) Σ_j KL[q_i || q_j]  (convexity; Moyer et al. 2018, eq. 8).
    """
    return pairwise_gaussian_kl(mu, logvar).mean(1)


@in_float32
def sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """[N, M] squared Euclidean distances ‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2·a_i·b_j, one matmul
    (cheaper to differentiate than `torch.cdist`); clamped at 0 against rounding."""
    sq = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :]) - 2 * a @ b.T
    return sq.clamp_min(0)


def rbf_kernel(a: Tensor, b: Tensor) -> Tensor:
    """k(a, b) = exp(−‖a − b‖² / D²) for D-dimensional rows, the kernel of the Lagrangian VAE /
    InfoVAE code (mean squared difference divided by D): the bandwidth follows the latent size."""
    dim = a.shape[1]
    return torch.exp(-sq_distances(a, b) / (dim * dim))


@in_float32
def mmd(x: Tensor, y: Tensor) -> Tensor:
    """Biased (V-statistic) squared MMD between samples x [N, D] and y [M, D] with `rbf_kernel`:
    mean k(x, x') + mean k(y, y') − 2 mean k(x, y)  (Gretton et al. 2012), as the original code.

    Computed as wᵀKw with K the kernel matrix of the stacked samples [x; y] and w = (1/N, …,
    −1/M, …): one kernel matrix instead of three, and one reduction, so the cancellation between
    the three means happens once (in float32 this is closer to the float64 value than summing
    three separate means)."""
    n, m = len(x), len(y)
    z = torch.cat([x, y])
    w = torch.cat([z.new_full((n,), 1.0 / n), z.new_full((m,), -1.0 / m)])
    return w @ rbf_kernel(z, z) @ w
