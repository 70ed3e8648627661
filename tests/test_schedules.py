import pytest
import torch

from vaestudy.objectives.configs import ScheduleConfig
from vaestudy.objectives.schedules import schedule_value


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


def test_sigmoid_midpoint_and_limits():
    kw = {"kind": "sigmoid", "steps": 1000, "steepness": 20.0}
    assert value(500, **kw) == pytest.approx(0.5)
    assert value(0, **kw) < 1e-4
    assert value(1000, **kw) > 1 - 1e-4
    assert value(400, **kw) < value(600, **kw)


def test_cyclical_fu_et_al():
    kw = {"kind": "cyclical", "steps": 100, "ratio": 0.5}
    assert value(0, **kw) == 0.0
    assert value(25, **kw) == pytest.approx(0.5)
    assert value(50, **kw) == pytest.approx(1.0)
    assert value(99, **kw) == pytest.approx(1.0)
    assert value(100, **kw) == 0.0  # restarts each cycle
    assert value(125, **kw) == pytest.approx(0.5)


def test_start_and_end_are_respected():
    assert value(500, kind="linear", steps=1000, start=0.2, end=0.6) == pytest.approx(0.4)
