import pytest
import torch

from vaestudy.config.objectives import ScheduleConfig
from vaestudy.training.objectives.schedules import schedule_value


def value(step, **kw):
    return schedule_value(ScheduleConfig(**kw), torch.tensor(step)).item()


def test_linear_warmup_key_steps():
    kw = {"kind": "linear", "steps": 1000}
    assert value(0, **kw) == 0.0
    assert value(250, **kw) == pytest.approx(0.25)
    assert value(1000, **kw) == pytest.approx(1.0)
    assert value(5000, **kw) == pytest.approx(1.0)


def test_constant_is_end_value():
    assert value(0, kind="constant", end=0.3) == pytest.approx(0.3)
    assert value(99_999, kind="constant", end=0.3) == pytest.approx(0.3)


@pytest.mark.parametrize("steepness", [4.0, 10.0, 20.0])
def test_sigmoid_reaches_its_end_values(steepness):
    kw = {"kind": "sigmoid", "steps": 1000, "steepness": steepness, "start": 0.1, "end": 0.9}
    assert value(0, **kw) == pytest.approx(0.1, abs=1e-6)
    assert value(500, **kw) == pytest.approx(0.5, abs=1e-6)
    assert value(1000, **kw) == pytest.approx(0.9, abs=1e-6)
    assert value(3000, **kw) == pytest.approx(0.9, abs=1e-6)
    assert value(400, **kw) < value(600, **kw)
    # the rescaled logistic curve: (σ(k(t/N − ½)) − σ(−k/2)) / (σ(k/2) − σ(−k/2))
    sig = torch.sigmoid(torch.tensor([steepness * (0.25 - 0.5), -steepness / 2, steepness / 2]))
    expected = 0.1 + 0.8 * ((sig[0] - sig[1]) / (sig[2] - sig[1])).item()
    assert value(250, **kw) == pytest.approx(expected, rel=1e-5)


def test_cyclical_fu_et_al():
    kw = {"kind": "cyclical", "steps": 100, "ratio": 0.5}
    assert value(0, **kw) == 0.0
    assert value(25, **kw) == pytest.approx(0.5)
    assert value(50, **kw) == pytest.approx(1.0)
    assert value(99, **kw) == pytest.approx(1.0)
    assert value(100, **kw) == 0.0  # restarts each cycle
    assert value(125, **kw) == pytest.approx(0.5)


def test_cyclical_with_a_number_of_cycles():
    """Fu et al.'s frange_cycle_linear: M = 4 cycles of N/M steps over N, rising for R of each,
    then β stays at its end value."""
    kw = {"kind": "cyclical", "steps": 400, "cycles": 4, "ratio": 0.5}
    assert value(0, **kw) == 0.0
    assert value(25, **kw) == pytest.approx(0.5)
    assert value(50, **kw) == pytest.approx(1.0) and value(99, **kw) == pytest.approx(1.0)
    assert value(100, **kw) == 0.0 and value(300, **kw) == 0.0
    assert value(325, **kw) == pytest.approx(0.5)
    assert value(400, **kw) == pytest.approx(1.0) and value(1000, **kw) == pytest.approx(1.0)
    assert value(30, kind="cyclical", steps=400, cycles=4, ratio=0.25) == pytest.approx(1.0)


def test_start_and_end_are_respected():
    assert value(500, kind="linear", steps=1000, start=0.2, end=0.6) == pytest.approx(0.4)
