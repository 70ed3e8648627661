import torch
from torch.distributions import Bernoulli, Normal

from vaestudy.likelihoods import bernoulli_nll, gaussian_nll


def test_bernoulli_nll_matches_torch_distributions():
    logits = torch.randn(3, 1, 28, 28)
    x = torch.bernoulli(torch.rand(3, 1, 28, 28))
    expected = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(bernoulli_nll(logits, x), expected, atol=1e-3)


def test_bernoulli_nll_on_intensities_is_cross_entropy():
    logits, x = torch.randn(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    p = logits.sigmoid()
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(bernoulli_nll(logits, x), expected, rtol=1e-4)


def test_gaussian_nll_matches_torch_distributions():
    logits, x = torch.randn(2, 1, 28, 28), torch.rand(2, 1, 28, 28)
    expected = -Normal(logits.sigmoid(), 0.2).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(gaussian_nll(0.2)(logits, x), expected, rtol=1e-4)
