import copy
import math

import pytest
import torch

from vaestudy.multipliers import Multipliers
from vaestudy.objectives.configs import MultiplierConfig


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
