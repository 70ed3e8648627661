import pytest
import torch

from vaestudy.config.objectives import (
    GecoConfig,
    IcVaeConfig,
    InfoVaeConfig,
    LagVaeConfig,
    MultiplierConfig,
)
from vaestudy.config.run import ModelConfig, RunConfig
from vaestudy.training.divergences import gaussian_kl, marginal_kl_bound, mmd
from vaestudy.training.likelihoods import bernoulli_nll
from vaestudy.training.models import build_model
from vaestudy.training.objectives.registry import build_objective


@pytest.fixture
def batch():
    x = torch.bernoulli(torch.rand(16, 1, 28, 28))
    y = torch.arange(16) % 10
    return x, y


def forward_with_seed(objective, model, x, y, seed=3):
    torch.manual_seed(seed)
    return objective(model, x, y, torch.tensor(0))


def seed_quantities(model, x, seed=3):
    """Recompute the seed notebook's quantities with the same random draws."""
    torch.manual_seed(seed)
    mu, logvar = model.encode(x)
    eps = torch.randn_like(mu)
    scale = (0.5 * logvar).exp()
    z = mu + eps * scale
    nll = bernoulli_nll(model.decode(z), x).mean()
    elbo_term = torch.sum(z.pow(2) / 2 - eps.pow(2) / 2 - scale.log(), 1).mean()  # seed 000
    mmd_term = 1e4 * mmd(z, torch.randn_like(z))
    return nll, elbo_term, mmd_term


@pytest.mark.parametrize("mi", [-2.0, 0.0, 1.5])
def test_lagvae_loss_equals_seed_formula(batch, mi):
    x, _ = batch
    model = build_model(ModelConfig(latent_dim=4))
    cfg = LagVaeConfig(mi=mi, epsilon=(80.0, 3.0), multiplier=MultiplierConfig(init=[0.7, 1.3]))
    objective = build_objective(cfg, bernoulli_nll)
    out = forward_with_seed(objective, model, x, None)
    nll, kl, mmd_term = seed_quantities(model, x)
    l1, l2, e1, e2 = 0.7, 1.3, 80.0, 3.0
    if mi <= 0:
        expected = l1 * nll + (l1 - mi) * kl + l2 * mmd_term - l1 * e1 - l2 * e2
    else:
        expected = (l1 + mi) * nll + l1 * kl + l2 * mmd_term - l1 * e1 - l2 * e2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    assert out.metrics["constraint/neg_elbo"].item() == pytest.approx((nll + kl).item(), rel=1e-5)
    assert out.metrics["target/mmd"].item() == 3.0
    assert torch.allclose(out.constraints, torch.stack([nll + kl - e1, mmd_term - e2]), rtol=1e-4)


def test_infovae_requires_frozen_multipliers_and_lagvae_moves_them(batch):
    x, _ = batch
    with pytest.raises(ValueError, match="frozen"):
        InfoVaeConfig(multiplier=MultiplierConfig(update="gradient"))
    model = build_model(ModelConfig(latent_dim=4))
    info = build_objective(InfoVaeConfig(epsilon=(1.0, 0.0)), bernoulli_nll)
    lag = build_objective(LagVaeConfig(epsilon=(1.0, 0.0)), bernoulli_nll)
    for objective in (info, lag):
        objective.update(objective(model, x, None, torch.tensor(0)))
    assert torch.equal(info.multipliers.value, torch.ones(2))
    assert (lag.multipliers.value > 1).all()  # both constraints violated: λ grows


def test_geco_loss_is_kl_plus_lambda_times_straight_through_constraint(batch):
    x, _ = batch
    model = build_model(ModelConfig(latent_dim=4))
    cfg = GecoConfig(kappa=100.0, multiplier=MultiplierConfig(init=2.0, update="geco", ema=0.5))
    objective = build_objective(cfg, bernoulli_nll)
    objective.multipliers.ema.fill_(10.0)  # as if C_ma = 10 after earlier steps
    objective.multipliers.seen.fill_(True)
    out = forward_with_seed(objective, model, x, None)
    c = out.metrics["recon"] - 100.0
    ema = 0.5 * 10.0 + 0.5 * c
    assert out.loss.item() == pytest.approx((out.metrics["kl"] + 2.0 * ema).item(), rel=1e-5)
    assert out.metrics["constraint_ma/recon"].item() == pytest.approx(ema.item() + 100.0, rel=1e-5)
    assert out.metrics["lambda/recon"].item() == 2.0


def test_icvae_loss_formula_and_conditional_decoder(batch):
    x, y = batch
    model = build_model(ModelConfig(latent_dim=4, conditional=True))
    cfg = IcVaeConfig(beta=0.1, multiplier=MultiplierConfig(init=1.5, update="frozen"))
    objective = build_objective(cfg, bernoulli_nll)
    out = forward_with_seed(objective, model, x, y)
    torch.manual_seed(3)
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    recon = bernoulli_nll(model.decode(z, y), x).mean()
    kl = gaussian_kl(mu, logvar).sum(1).mean()
    expected = 2.5 * recon + 0.1 * kl + 1.5 * marginal_kl_bound(mu, logvar).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the label changes the reconstruction: the decoder really is conditional
    assert not torch.allclose(model.decode(z, y), model.decode(z, (y + 1) % 10))


def test_icvae_needs_conditional_model():
    with pytest.raises(ValueError, match="conditional"):
        RunConfig.model_validate({"objective": {"name": "icvae"}})


def test_ladder_per_level_kls_sum_to_total(batch):
    x, _ = batch
    model = build_model(ModelConfig(name="vlae", latent_dim=3))
    assert model.levels == [3, 3, 3, 3]
    objective = build_objective(RunConfig().objective, bernoulli_nll)
    out = objective(model, x, None, torch.tensor(0))
    levels = [out.metrics[f"kl/level{i}"] for i in range(1, 5)]
    assert torch.isclose(sum(levels), out.metrics["kl"], rtol=1e-5)
    assert out.metrics["recon"].shape == ()


@pytest.mark.parametrize("name", ["mlp", "conv", "vlae"])
def test_models_return_mean_logvar_and_logits(name):
    model = build_model(ModelConfig(name=name, latent_dim=5))
    mu, logvar = model.encode(torch.rand(2, 1, 28, 28))
    assert mu.shape == logvar.shape == (2, model.latent_dim)
    assert model.decode(mu).shape == (2, 1, 28, 28)
