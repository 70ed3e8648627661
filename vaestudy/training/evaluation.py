"""Held-out evaluation of one split (validation or test), batched on the device. All figures
are per-example means in nats.

- objective metrics on the split (ELBO, rate = KL, distortion = recon, each constraint's
  value and target, and `satisfied/<name>` = 1 if value <= target);
- `iwae_nll`: −log p(x) estimated by the importance-weighted bound with k samples (Burda et al.
  2016, eq. 8): log p(x) >= E[log (1/k) Σ_i p(x, z_i)/q(z_i|x)]; only for pixel models that are
  likelihoods (not `pixels: mse`);
- `active_units`: latents with Cov_x(E_q[z_u]) > 0.01 (Burda et al. 2016, §5.2);
- for conditional decoders, `probe_acc`: a linear probe predicting the label from E_q[z]
  (trained on the train split, scored on the split) and `probe_chance`, the majority rate.

Every figure is computed on the device as a 0-dim tensor (`evaluate_on_device`); `host_values`
brings them all to the host in one copy, the evaluation's one host sync. The IWAE bound decodes
k images per example: its chunks are sized in bytes (`IWAE_CHUNK_BYTES`), so 64×64×3 images
at k = 100 take no more device memory than MNIST's.

The trainer scores the validation split at every evaluation and at the end, and the test split
once, at the end (`Trainer.final_result`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaestudy.config.run import TrainConfig
from vaestudy.training.data import DeviceData, Split, images
from vaestudy.training.divergences import log_normal
from vaestudy.training.likelihoods import NegLogLik
from vaestudy.training.models import VAE
from vaestudy.training.objectives.base import Objective

ACTIVE_UNIT_THRESHOLD = 0.01
# Device memory one IWAE chunk may take: k decoded images per example, each held as about
# `IWAE_FLOATS_PER_PIXEL` float32 values per pixel at once (logits, the repeated inputs, the
# per-pixel NLL and its temporaries).
IWAE_CHUNK_BYTES = 256 * 2**20
IWAE_FLOATS_PER_PIXEL = 4
_TEST_KEYS = ("kl", "recon", "elbo", "kl/", "kl_marginal", "constraint/", "target/")


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def iwae_chunk(k: int, pixels: int) -> int:
    """Examples per IWAE chunk: k decoded images of `pixels` values each within
    `IWAE_CHUNK_BYTES` (at least one example)."""
    return max(1, IWAE_CHUNK_BYTES // (k * pixels * IWAE_FLOATS_PER_PIXEL * 4))


def host_values(metrics: dict[str, Tensor]) -> dict[str, float]:
    """0-dim device tensors as floats, in one device-to-host copy."""
    if not metrics:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))


@torch.no_grad()
def iwae_log_likelihood(model: VAE, nll: NegLogLik, x: Tensor, y: Tensor | None, k: int) -> Tensor:
    """Per-example importance-weighted bound on log p(x) with k samples from q(z|x), nats [B];
    `x` as float intensities."""
    mu, logvar = model.encode(x)
    mu, logvar = mu.float(), logvar.float()
    eps = torch.randn((k, *mu.shape), device=mu.device)
    z = mu + (0.5 * logvar).exp() * eps  # [k, B, D]
    flat_z = z.reshape(-1, z.shape[-1])
    flat_y = None if y is None else y.repeat(k)
    logits = model.decode(flat_z, flat_y).float()
    x_rep = x.expand(k, *x.shape).reshape(-1, *x.shape[1:])
    log_px_z = -nll(logits, x_rep).view(k, -1)
    log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    log_qz = log_normal(z, mu, logvar)
    return torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(k)


@torch.no_grad()
def iwae_nll(model: VAE, nll: NegLogLik, x: Tensor, y: Tensor | None, k: int) -> Tensor:
    """−(mean IWAE bound) over stored images `x`, nats per example, chunked by bytes."""
    total = torch.zeros((), device=x.device)
    for s in _batches(x.shape[0], iwae_chunk(k, x[0].numel())):
        total += iwae_log_likelihood(model, nll, images(x[s]), None if y is None else y[s], k).sum()
    return -(total / x.shape[0])


@torch.no_grad()
def encoder_means(model: VAE, x: Tensor, batch_size: int) -> Tensor:
    """E_q[z] of stored images `x`, [N, D]."""
    return torch.cat(
        [model.encode(images(x[s]))[0].float() for s in _batches(x.shape[0], batch_size)]
    )


def active_units(means: Tensor) -> Tensor:
    """How many latents have Cov_x(E_q[z_u]) above the threshold (a 0-dim float tensor)."""
    return (means.var(0, unbiased=True) > ACTIVE_UNIT_THRESHOLD).sum().float()


@dataclass(frozen=True)
class Probe:
    """A multinomial logistic regression on standardised encoder means (`fit_probe`)."""

    mean: Tensor
    std: Tensor
    w: Tensor
    bias: Tensor

    def accuracy(self, z: Tensor, y: Tensor) -> Tensor:
        """Its accuracy on (z, y) as a 0-dim tensor."""
        return ((((z - self.mean) / self.std) @ self.w + self.bias).argmax(1) == y).float().mean()


def fit_probe(train_z: Tensor, train_y: Tensor, n_classes: int, steps: int = 300) -> Probe:
    """The probe fitted to (train_z, train_y): standardised features, full-batch Adam from
    zeros (deterministic: the same fit whichever split it then scores)."""
    mean, std = train_z.mean(0), train_z.std(0).clamp_min(1e-6)
    a = (train_z - mean) / std
    with torch.enable_grad():
        w = torch.zeros(a.shape[1], n_classes, device=a.device, requires_grad=True)
        bias = torch.zeros(n_classes, device=a.device, requires_grad=True)
        opt = torch.optim.Adam([w, bias], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(a @ w + bias, train_y).backward()
            opt.step()
    return Probe(mean, std, w.detach(), bias.detach())


@torch.no_grad()
def objective_metrics(
    model: VAE, objective: Objective, x_all: Tensor, y_all: Tensor, batch_size: int, step: Tensor
) -> dict[str, Tensor]:
    """The objective's metrics averaged over stored held-out images `x_all` (no state
    changes), with `satisfied/<name>`; 0-dim device tensors."""
    sums: dict[str, Tensor] = {}
    n = x_all.shape[0]
    for s in _batches(n, batch_size):
        x, y = images(x_all[s]), y_all[s]
        out = objective(model, x, y if model.n_classes else None, step)
        weight = (s.stop - s.start) / n
        for key, value in out.metrics.items():
            if key.startswith(_TEST_KEYS):
                term = value.detach().float() * weight
                sums[key] = sums[key] + term if key in sums else term
    for key in [k for k in sums if k.startswith("constraint/")]:
        name = key.removeprefix("constraint/")
        sums[f"satisfied/{name}"] = (sums[key] <= sums[f"target/{name}"]).float()
    return sums


def evaluate_on_device(
    model: VAE,
    objective: Objective,
    data: DeviceData,
    cfg: TrainConfig,
    step: Tensor,
    *,
    split: Split = "val",
    full: bool = True,
    log_likelihood: bool = True,
    probes: dict[str, Probe] | None = None,
) -> dict[str, Tensor]:
    """Metrics of the held-out `split` as 0-dim device tensors (no host sync). `full=False`
    skips the IWAE, active units and the probe; `log_likelihood=False` (the objective's recon
    is not −log p(x|z)) skips the IWAE.

    The objective's metrics use the training batch size, since batch statistics (MMD, the
    pairwise marginal KL) depend on it; the rest use `cfg.eval_batch_size`. `probes`: where the
    linear probe fitted on the training split is kept for the next split evaluated with the
    same weights (the caller's to empty when they change).
    """
    batch_size = cfg.eval_batch_size
    was_training = model.training
    model.eval()
    objective.eval()
    try:
        x, y = data.split(split)
        metrics = objective_metrics(model, objective, x, y, cfg.batch_size, step)
        if full and log_likelihood:
            labels = y if model.n_classes else None
            metrics["iwae_nll"] = iwae_nll(model, objective.nll, x, labels, cfg.iwae_samples)
        if full:
            held_mu = encoder_means(model, x, batch_size)
            metrics["active_units"] = active_units(held_mu)
            if model.n_classes:
                probe = (probes or {}).get("probe")
                if probe is None:
                    train_mu = encoder_means(model, data.train_x, batch_size)
                    probe = fit_probe(train_mu, data.train_y, data.n_classes)
                    if probes is not None:
                        probes["probe"] = probe
                metrics["probe_acc"] = probe.accuracy(held_mu, y)
                # one-hot by comparison: F.one_hot checks its classes on the host (a sync)
                classes = torch.arange(data.n_classes, device=y.device)
                counts = (y.unsqueeze(-1) == classes).sum(0)  # a static shape, unlike bincount
                metrics["probe_chance"] = counts.max() / counts.sum()
    finally:
        model.train(was_training)
        objective.train(was_training)
    return metrics
