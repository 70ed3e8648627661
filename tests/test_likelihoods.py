import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal

from vaestudy.errors import ConfigError
from vaestudy.study.spec import load_study
from vaestudy.training.likelihoods import bernoulli_nll, gaussian_nll, mse_sum


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


def test_mse_sum_is_the_lagvae_seeds_distortion_and_not_a_likelihood():
    """The seed's F.mse_loss(x, sigmoid decoder, reduction='sum') / batch; it equals the
    Gaussian NLL at σ² = ½ less 784·½·log π ≈ 448.7 nats per example."""
    logits, x = torch.randn(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    seed = F.mse_loss(x, logits.sigmoid(), reduction="sum") / len(x)
    assert mse_sum(logits, x).mean().item() == pytest.approx(seed.item(), rel=1e-5)
    shift = 784 * 0.5 * math.log(math.pi)
    assert shift == pytest.approx(448.7, abs=0.05)
    gauss = gaussian_nll(math.sqrt(0.5))(logits, x)
    assert torch.allclose(gauss - mse_sum(logits, x), torch.full((5,), shift), rtol=1e-4)


def test_a_study_cannot_rank_squared_error_by_a_likelihood_bound(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "data: {pixels: mse}\nobjective: {name: lagvae}\n"
        "study: {name: s, metric: val/iwae_nll, search: {objective.mi: {uniform: [0, 1]}}}\n"
    )
    with pytest.raises(ConfigError, match="pixels: mse is not a log-likelihood"):
        load_study(path)
    path.write_text(path.read_text().replace("val/iwae_nll", "val/kl"))
    assert load_study(path).name == "s"
