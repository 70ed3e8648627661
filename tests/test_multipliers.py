import copy
import math

import pytest
import torch

from vaestudy.config.objectives import MultiplierConfig
from vaestudy.training.multipliers import Multipliers


def run(cfg: MultiplierConfig, constraint_values: list[float], names=("c",)) -> Multipliers:
    m = Multipliers(list(names), cfg)
    for c in constraint_values:
        m.update(torch.tensor([c] * len(names)))
    return m


def test_gradient_ascent_grows_while_violated_and_falls_to_floor_once_satisfied():
    cfg = MultiplierConfig(init=1.0, update="gradient", optimizer="sgd", lr=0.1, min=0.01, max=100)
    m = Multipliers(["c"], cfg)
    trace = []
    for _ in range(10):
        m.update(torch.tensor([2.0]))  # D − ε = 2 > 0: violated
        trace.append(m.value.item())
    assert all(b > a for a, b in zip(trace, trace[1:], strict=False))
    assert trace[-1] == pytest.approx(1.0 + 10 * 0.1 * 2.0)
    for _ in range(100):
        m.update(torch.tensor([-1.0]))  # satisfied
    assert m.value.item() == pytest.approx(0.01)


def test_rmsprop_ascent_like_the_lagrangian_vae_seed():
    cfg = MultiplierConfig(init=[1.0, 1.0], update="gradient", optimizer="rmsprop", lr=1e-2)
    m = run(cfg, [5.0] * 20, names=("a", "b"))
    lam = torch.nn.Parameter(torch.ones(2))
    ref = torch.optim.RMSprop([lam], lr=1e-2, maximize=True)
    for _ in range(20):
        lam.grad = torch.full((2,), 5.0)
        ref.step()
        with torch.no_grad():
            lam.clamp_(1e-3, 100)
    assert torch.allclose(m.value, lam.detach())
    assert (m.value > 1).all()


def test_frozen_never_moves():
    m = run(MultiplierConfig(init=0.7, update="frozen"), [100.0, -100.0, float("inf")])
    assert m.value.item() == pytest.approx(0.7)


def test_geco_moving_average_and_update_match_hand_computation():
    alpha, nu = 0.9, 0.1
    cfg = MultiplierConfig(init=1.0, update="geco", ema=alpha, lr=nu, min=1e-6, max=1e6)
    seq = [3.0, 1.0, -2.0, -4.0]
    m = Multipliers(["c"], cfg)
    ema, lam = None, 1.0
    for c in seq:
        ema = c if ema is None else alpha * ema + (1 - alpha) * c
        lam = lam * math.exp(nu * ema)
        m.update(torch.tensor([c]))
        assert m.ema.item() == pytest.approx(ema, rel=1e-6)
        assert m.value.item() == pytest.approx(lam, rel=1e-5)


def test_geco_straight_through_has_ema_value_and_constraint_gradient():
    cfg = MultiplierConfig(update="geco", ema=0.5)
    m = run(cfg, [4.0])
    c = torch.tensor([2.0], requires_grad=True)
    st = m.straight_through(c)
    assert st.item() == pytest.approx(0.5 * 4.0 + 0.5 * 2.0)
    st.sum().backward()
    assert c.grad.item() == 1.0


def test_warmup_holds_lambda_then_releases_it():
    cfg = MultiplierConfig(init=1.0, update="gradient", optimizer="sgd", lr=1.0, warmup_steps=3)
    m = run(cfg, [1.0, 1.0, 1.0])
    assert m.value.item() == 1.0
    m.update(torch.tensor([1.0]))
    assert m.value.item() == 2.0


def test_state_round_trips_through_state_dict():
    cfg = MultiplierConfig(init=1.0, update="gradient", optimizer="adam", lr=0.1)
    a = run(cfg, [1.0, 2.0])
    b = Multipliers(["c"], cfg)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as a checkpoint would, no aliasing
    a.update(torch.tensor([1.0]))
    b.update(torch.tensor([1.0]))
    assert a.value.item() == pytest.approx(b.value.item())
    assert a.ema.item() == pytest.approx(b.ema.item())


def test_nupi_follows_its_update_equations_step_by_step():
    """ξ_t = ν·ξ_{t−1} + (1 − ν)·C_t, λ_{t+1} = Π[λ_t + κ_i·C_t + κ_p·(ξ_t − ξ_{t−1})] for two
    constraints, one hitting the lower clip."""
    ki, kp, nu, lo, hi = 0.1, 0.5, 0.7, 0.01, 5.0
    cfg = MultiplierConfig(init=[1.0, 0.2], update="nupi", lr=ki, kp=kp, nu=nu, min=lo, max=hi)
    m = Multipliers(["a", "b"], cfg)
    lam, xi = [1.0, 0.2], [0.0, 0.0]
    for c in ([2.0, -1.0], [1.0, -3.0], [-0.5, 0.4], [-2.0, 1.5], [0.3, 0.0]):
        m.update(torch.tensor(c))
        for i in range(2):
            new_xi = nu * xi[i] + (1 - nu) * c[i]
            lam[i] = min(hi, max(lo, lam[i] + ki * c[i] + kp * (new_xi - xi[i])))
            xi[i] = new_xi
        assert m.value.tolist() == pytest.approx(lam, rel=1e-5, abs=1e-6)
        assert m.xi.tolist() == pytest.approx(xi, rel=1e-5, abs=1e-6)


def test_nupi_unprojected_is_the_papers_closed_form():
    """Without clipping, λ_{t+1} = λ_0 + κ_i·Σ_{τ<=t} C_τ + κ_p·ξ_t (Sohrabi et al. 2024)."""
    cfg = MultiplierConfig(init=3.0, update="nupi", lr=0.05, kp=0.8, nu=0.9, min=0, max=1e9)
    m = Multipliers(["c"], cfg)
    errors = [1.0, 2.0, -1.0, 0.5, -0.25, 3.0]
    xi = 0.0
    for t, c in enumerate(errors):
        m.update(torch.tensor([c]))
        xi = 0.9 * xi + 0.1 * c
        closed = 3.0 + 0.05 * sum(errors[: t + 1]) + 0.8 * xi
        assert m.value.item() == pytest.approx(closed, rel=1e-6)


def test_nupi_without_proportional_term_is_sgd_ascent():
    values = [2.0, -1.0, 0.5, 4.0, -3.0]
    kw = {"init": 1.0, "lr": 0.1, "min": 1e-3, "max": 100}
    nupi = run(MultiplierConfig(update="nupi", kp=0.0, nu=0.3, **kw), values)
    sgd = run(MultiplierConfig(update="gradient", optimizer="sgd", **kw), values)
    assert nupi.value.item() == pytest.approx(sgd.value.item(), rel=1e-6)


def test_augmented_lagrangian_dual_step_and_penalty():
    """Dual step λ <- Π[λ + ρ·C]; the loss term λ·C + penalty(C) equals
    (max(0, λ + ρC)² − λ²)/(2ρ), with gradient max(0, λ + ρC) in C."""
    rho = 0.5
    cfg = MultiplierConfig(init=[1.0, 1.0], update="augmented", rho=rho, min=1e-3, max=100)
    m = Multipliers(["a", "b"], cfg)
    lam = [1.0, 1.0]
    for c in ([2.0, -1.0], [1.0, -3.0], [-6.0, 0.4]):
        m.update(torch.tensor(c))
        lam = [min(100.0, max(1e-3, v + rho * ci)) for v, ci in zip(lam, c, strict=True)]
        assert m.value.tolist() == pytest.approx(lam, rel=1e-5, abs=1e-6)
    lam_t = m.value.detach()
    c = torch.tensor([3.0, -10.0], requires_grad=True)  # b: λ + ρC < 0, the penalty is flat
    term = (lam_t * c).sum() + m.penalty(c)
    expected = ((torch.relu(lam_t + rho * c) ** 2 - lam_t**2) / (2 * rho)).sum()
    assert term.item() == pytest.approx(expected.item(), rel=1e-6)
    term.backward()
    assert c.grad.tolist() == pytest.approx(torch.relu(lam_t + rho * c.detach()).tolist())
    assert c.grad[1].item() == 0.0


def test_penalty_is_zero_for_the_other_rules():
    for update in ("gradient", "geco", "nupi", "frozen"):
        m = Multipliers(["c"], MultiplierConfig(update=update))
        assert m.penalty(torch.tensor([5.0])).item() == 0.0
