import itertools

import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaestudy.training.divergences import (
    gaussian_kl,
    marginal_kl_bound,
    mc_kl,
    mmd,
    pairwise_gaussian_kl,
    rbf_kernel,
)


def _posterior(mu, logvar):
    return Independent(Normal(mu, (0.5 * logvar).exp()), 1)


def test_analytic_kl_matches_monte_carlo_estimate():
    mu = torch.tensor([[0.5, -1.0, 2.0]])
    logvar = torch.tensor([[0.3, -0.7, 0.1]])
    q = _posterior(mu, logvar)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean()
    analytic = gaussian_kl(mu, logvar).sum()
    assert torch.isclose(analytic, kl_divergence(q, p).squeeze(), atol=1e-5)
    assert abs(analytic - mc) < 0.02


def test_single_sample_kl_is_log_q_minus_log_p_and_unbiased():
    mu, logvar = torch.randn(4, 5), torch.randn(4, 5) * 0.3
    eps = torch.randn(4, 5)
    z = mu + (0.5 * logvar).exp() * eps
    q, p = _posterior(mu, logvar), Independent(Normal(torch.zeros(5), torch.ones(5)), 1)
    assert torch.allclose(mc_kl(z, eps, logvar).sum(1), q.log_prob(z) - p.log_prob(z), atol=1e-5)
    eps = torch.randn(100_000, 4, 5)
    z = mu + (0.5 * logvar).exp() * eps
    estimate = mc_kl(z, eps, logvar).mean(0)
    assert torch.allclose(estimate, gaussian_kl(mu, logvar), atol=0.03)


def test_pairwise_kl_equals_brute_force_torch_distributions():
    mu, logvar = torch.randn(6, 3), torch.randn(6, 3)
    fast = pairwise_gaussian_kl(mu, logvar)
    brute = torch.empty(6, 6)
    for i, j in itertools.product(range(6), range(6)):
        brute[i, j] = kl_divergence(_posterior(mu[i], logvar[i]), _posterior(mu[j], logvar[j]))
    assert torch.allclose(fast, brute, atol=1e-4)
    assert torch.allclose(marginal_kl_bound(mu, logvar), brute.mean(1), atol=1e-4)
    assert torch.allclose(fast.diagonal(), torch.zeros(6), atol=1e-5)


def test_mmd_equals_double_loop_with_its_gradient():
    x, y = torch.randn(7, 4, requires_grad=True), torch.randn(5, 4) + 0.5
    dim = 4

    def k(a, b):
        return torch.exp(-((a - b) ** 2).mean() / dim)  # the original code's kernel

    def mean_k(a, b):
        return sum(k(ai, bj) for ai in a for bj in b) / (len(a) * len(b))

    brute = mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)
    fast = mmd(x, y)
    assert torch.isclose(fast, brute, atol=1e-5)
    assert torch.isclose(rbf_kernel(x, x).diagonal(), torch.ones(7), atol=1e-5).all()
    (grad_fast,) = torch.autograd.grad(fast, x)
    (grad_brute,) = torch.autograd.grad(brute, x)
    assert torch.allclose(grad_fast, grad_brute, atol=1e-5)


def test_mmd_in_float32_keeps_the_lagrangian_vaes_scale():
    """The Lagrangian VAE multiplies MMD² by 1e4: at a batch of latents, float32 must stay within
    0.01 of the float64 value after that scaling."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        z = 0.8 * torch.randn(128, 16, generator=gen, dtype=torch.float64) + 0.1
        prior = torch.randn(128, 16, generator=gen, dtype=torch.float64)
        exact = mmd(z, prior)
        assert abs(1e4 * (mmd(z.float(), prior.float()).double() - exact)) < 0.01


def test_mmd_separates_distributions():
    same = mmd(torch.randn(500, 8), torch.randn(500, 8))
    shifted = mmd(torch.randn(500, 8) + 2.0, torch.randn(500, 8))
    assert shifted > 10 * same
