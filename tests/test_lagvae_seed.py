"""The Lagrangian VAE seed's configuration runs as written (`configs/lagvae_seed.yaml`), and its
multipliers move as the seed's own loop moves them.

The reference below re-implements the seed's training loop from the notebook
(`../shared/seeds/000_*.txt`), independently of vaestudy: its encoder/decoder (784-512-128-z,
sigmoid output), `mse_loss(reduction='sum') / len(x)`, the single-sample KL `Σ z²/2 − ε²/2 −
log σ`, MMD × 10⁴ with the kernel exp(−mean‖Δ‖²/dim), the loss for mi > 0, Adam 1e-4 on the
networks, and λ by RMSprop 1e-4 on the negated gradient, clamped to [0.001, 100].
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import REPO
from vaestudy.config.run import load_run_config
from vaestudy.training.data import images, load_data
from vaestudy.training.trainer import Trainer

STEPS = 400  # the seed's 10 epochs, of the bundled 4,000-image subset


def _kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dim = a.size(1)
    return torch.exp(-(a.unsqueeze(1) - b.unsqueeze(0)).pow(2).mean(2) / float(dim))


def seed_lambda_path(x_train: torch.Tensor, seed: int) -> list[tuple[float, float]]:
    """λ1, λ2 after each step of the seed's loop (batch 100, shuffled each epoch)."""
    torch.manual_seed(seed)
    z_dim = 16
    enc = nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU()
    )  # fmt: skip
    mean, logvar = nn.Linear(128, z_dim), nn.Linear(128, z_dim)
    dec = nn.Sequential(
        nn.Linear(z_dim, 128), nn.ReLU(), nn.Linear(128, 512), nn.ReLU(),
        nn.Linear(512, 784), nn.Sigmoid(),
    )  # fmt: skip
    params = [*enc.parameters(), *mean.parameters(), *logvar.parameters(), *dec.parameters()]
    l1, l2 = nn.Parameter(torch.tensor(1.0)), nn.Parameter(torch.tensor(1.0))
    optim = torch.optim.Adam(params, lr=1e-4)
    lambda_optim = torch.optim.RMSprop([l1, l2], lr=1e-4)
    e1, e2, mi = 86.0, 5.0, 1.0
    path = []
    while len(path) < STEPS:
        for idx in torch.randperm(len(x_train)).split(100):
            x = x_train[idx]
            optim.zero_grad()
            lambda_optim.zero_grad()
            h = enc(x)
            mu, scale = mean(h), (logvar(h) / 2).exp()
            eps = torch.randn_like(mu)
            z = mu + eps * scale
            x_pred = dec(z).view(-1, 1, 28, 28)
            nll = F.mse_loss(x, x_pred, reduction="sum") / len(x)
            prior = torch.randn_like(z)
            mmd = 10000.0 * (
                _kernel(z, z).mean() + _kernel(prior, prior).mean() - 2 * _kernel(z, prior).mean()
            )
            elbo = torch.sum(z.pow(2) / 2 - eps.pow(2) / 2 - scale.log(), 1).mean()
            loss = (l1 + mi) * nll + l1 * elbo + l2 * mmd - l1 * e1 - l2 * e2
            loss.backward()
            optim.step()
            l1.grad *= -1.0
            l2.grad *= -1.0
            lambda_optim.step()
            with torch.no_grad():
                l1.clamp_(0.001, 100)
                l2.clamp_(0.001, 100)
            path.append((l1.item(), l2.item()))
            if len(path) == STEPS:
                break
    return path


def test_the_seed_configuration_moves_lambda_as_the_seed_does(shared_data):
    cfg = load_run_config(
        REPO / "configs" / "lagvae_seed.yaml",
        [f"data.root={shared_data}", "train.log_every=1", "train.device=cpu"],
    )
    trainer = Trainer(cfg)
    assert trainer.total_steps == STEPS  # 4,000 images / batch 100 × 10 epochs
    result = trainer.fit()
    # history[t] holds λ as used at step t + 1, i.e. after t updates; the reference records
    # λ after each update, so vaestudy's row t + 1 is the reference's row t.
    ours = [(r["lambda/neg_elbo"], r["lambda/mmd"]) for r in result.history][1:]
    data = load_data(cfg.data, torch.device("cpu"))
    refs = [seed_lambda_path(images(data.train_x), seed)[: STEPS - 1] for seed in (0, 1)]

    # As in the seed's printout, λ1 falls once −ELBO is under ε1 = 86 (on this subset it starts
    # near 182, so λ1 first rises for some 80 steps) and λ2 rises (MMD × 10⁴ stays over 5).
    top = max(range(len(ours)), key=lambda t: ours[t][0])
    assert result.history[top]["constraint/neg_elbo"] > 86 > result.test["constraint/neg_elbo"]
    assert ours[-1][0] < ours[top][0] - 0.01 and ours[-1][1] > 1.03
    # Tolerance from the reference itself: two seeds of the seed's loop differ by `spread` at
    # most (different initialisations, batches and noise; RMSprop's normalised step makes λ move
    # by about lr per step whatever |C|, so paths differ only where the sign or the relative
    # size of C differs). vaestudy must stay as close to the reference as the reference stays
    # to itself, with a floor of 2e-3 (5% of the ~0.04 that λ travels in 400 steps).
    spread = max(abs(a - b) for p, q in zip(*refs, strict=True) for a, b in zip(p, q, strict=True))
    tol = max(3 * spread, 2e-3)
    worst = max(
        abs(a - b) for p, q in zip(ours, refs[0], strict=True) for a, b in zip(p, q, strict=True)
    )
    assert worst <= tol, f"λ paths differ by {worst:.2e} (reference seed-to-seed {spread:.2e})"
    assert "iwae_nll" not in result.test  # the squared error is not a log-likelihood
    test = result.test
    assert test["recon"] == pytest.approx(test["constraint/neg_elbo"] - test["kl"], rel=1e-4)
