"""End-to-end training on the shared MNIST subset: the maths has to show up in the numbers."""

import pytest
import torch

from vaestudy.config.run import RunConfig
from vaestudy.training.data import images
from vaestudy.training.evaluation import iwae_log_likelihood
from vaestudy.training.objectives.base import Objective
from vaestudy.training.trainer import Trainer


def make_cfg(root, **sections) -> RunConfig:
    raw = {
        "data": {"root": str(root), "train_limit": 2222, "test_limit": 500},
        "model": {"latent_dim": 8, "hidden": 256},
        "train": {"epochs": 4, "batch_size": 100, "log_every": 10, "iwae_samples": 20},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return RunConfig.model_validate(raw)


@pytest.fixture(scope="module")
def trained_elbo(shared_data):
    cfg = make_cfg(shared_data)
    trainer = Trainer(cfg)
    before = trainer.evaluate(full=False)
    result = trainer.fit()
    return trainer, before, result


def test_training_lowers_test_negative_elbo(trained_elbo):
    trainer, before, result = trained_elbo
    assert -before["elbo"] > 400  # untrained: ~543 nats (784 · log 2)
    assert -result.test["elbo"] < -before["elbo"] - 200
    assert result.steps == trainer.total_steps == 80  # 2,000 images (222 for validation) / 100 × 4
    assert len(result.history) == 8 and result.history[-1]["step"] == 80
    assert {"kl", "recon", "elbo", "loss", "coef/beta"} <= set(result.history[0])


def test_iwae_k1_equals_single_sample_elbo(trained_elbo):
    trainer, _, _ = trained_elbo
    model, x = trainer.model, images(trainer.data.test_x[:64])
    mc = Objective.__new__(Objective)
    torch.nn.Module.__init__(mc)
    mc.cfg, mc.nll = type("Cfg", (), {"kl": "mc"})(), trainer.objective.nll
    with torch.no_grad():
        torch.manual_seed(11)
        p = mc.vae_pass(model, x, None)
        torch.manual_seed(11)
        iwae1 = iwae_log_likelihood(model, mc.nll, x, None, k=1)
    assert torch.allclose(iwae1, -(p.recon + p.kl), atol=1e-3)


def test_iwae_bound_grows_with_k_on_a_trained_model(trained_elbo):
    trainer, _, result = trained_elbo
    model, nll, x = trainer.model, trainer.objective.nll, images(trainer.data.test_x[:200])
    torch.manual_seed(0)
    bounds = [iwae_log_likelihood(model, nll, x, None, k).mean().item() for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2]
    assert result.test["iwae_nll"] < -result.test["elbo"]
    assert 0 < result.test["active_units"] <= 8


def test_same_seed_reproduces_a_run(shared_data):
    cfg = make_cfg(shared_data, train={"epochs": 0.5})
    a, b = Trainer(cfg).fit(), Trainer(cfg).fit()
    assert a.history == b.history


def test_checkpoint_resume_continues_the_same_run(shared_data):
    cfg = make_cfg(shared_data, objective={"name": "geco", "kappa": 150.0}, train={"epochs": 1})
    first = Trainer(cfg)
    first.total_steps = 10
    first.fit()
    blob = first.save_bytes()
    resumed = Trainer(cfg)
    resumed.load_bytes(blob)
    assert resumed.step == 10 and len(resumed.history) == 1
    assert torch.equal(resumed.objective.multipliers.value, first.objective.multipliers.value)
    result = resumed.fit()
    assert result.steps == 20 and [r["step"] for r in result.history] == [10.0, 20.0]


def test_a_non_finite_value_is_reported_as_divergence(shared_data):
    from vaestudy.training.trainer import Diverged

    cfg = make_cfg(shared_data, data={"pixels": "bernoulli"})
    trainer = Trainer(cfg)
    with torch.no_grad():
        next(trainer.model.parameters())[0, 7] = float("nan")  # one poisoned weight
    with pytest.raises(Diverged, match="non-finite") as err:
        trainer.fit()
    assert err.value.step <= 20 and trainer.history[-1]["step"] == err.value.step


def test_every_evaluation_closes_a_trajectory_point(shared_data):
    cfg = make_cfg(shared_data, train={"epochs": 2, "log_every": 50})  # 20 steps per epoch
    trainer = Trainer(cfg)
    seen = []
    trainer.fit(on_eval=lambda step, test: seen.append((step, trainer.history[-1]["step"], test)))
    assert [(s, h) for s, h, _ in seen] == [(20, 20.0)]
    assert {"elbo", "kl", "recon"} <= set(seen[0][2])
    assert [r["step"] for r in trainer.history] == [20.0, 40.0]


def test_compiled_step_matches_the_eager_step(shared_data, monkeypatch):
    """train.compile: the torch.compile'd forward gives the eager metrics (same noise: inductor
    told to use torch's RNG) and trains to the same place."""
    import torch._inductor.config as inductor

    monkeypatch.setattr(inductor, "fallback_random", True)
    train = {"epochs": 0.5, "log_every": 5}
    objective = {"name": "geco", "kappa": 150.0, "multiplier": {"update": "geco", "lr": 1e-3}}
    eager = Trainer(make_cfg(shared_data, train=train, objective=objective)).fit()
    compiled_cfg = make_cfg(shared_data, train={**train, "compile": True}, objective=objective)
    compiled = Trainer(compiled_cfg).fit()
    assert [r.keys() for r in compiled.history] == [r.keys() for r in eager.history]
    for a, b in zip(compiled.history, eager.history, strict=True):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-3)


def test_without_log_every_a_run_logs_about_a_hundred_points(shared_data):
    cfg = make_cfg(shared_data, train={"epochs": 0.5, "log_every": None})  # 10 steps
    assert [r["step"] for r in Trainer(cfg).fit().history] == [float(s) for s in range(1, 11)]
    long = Trainer(make_cfg(shared_data, train={"epochs": 12, "log_every": None}))  # 240 steps
    assert long.log_every == 2


# GECO with an unreachable target (κ = 40 nats) and a low clip: λ reaches its clip in a few steps.
UNREACHABLE = {
    "name": "geco",
    "kappa": 40.0,
    "multiplier": {"update": "geco", "lr": 1e-2, "max": 3.0, "warmup_steps": 0},
}


def test_a_multiplier_pinned_at_its_clip_is_saturated(shared_data):
    cfg = make_cfg(shared_data, objective=UNREACHABLE, train={"epochs": 2, "log_every": 2})
    result = Trainer(cfg).fit()
    assert result.history[-1]["lambda/recon"] == 3.0
    assert result.saturated == ["recon"] and not result.stopped_saturated
    assert result.steps == 40 and result.test["constraint/recon"] > 40


def test_stop_saturated_stops_once_the_last_fifth_is_pinned_and_evaluates(shared_data):
    train = {"epochs": 20, "log_every": 2, "stop_saturated": True}  # 400 planned steps
    trainer = Trainer(make_cfg(shared_data, objective=UNREACHABLE, train=train))
    result = trainer.fit()
    assert result.stopped_saturated and result.saturated == ["recon"]
    assert result.steps < 400 and trainer.step == result.steps
    pinned = [r["step"] for r in result.history if r["lambda/recon"] == 3.0]
    first = result.history[[r["step"] for r in result.history].index(pinned[0]) - 1]["step"]
    assert result.steps - first == 80  # stopped the moment 20% of 400 steps were at the clip
    assert "iwae_nll" in result.test and "constraint/recon" in result.test


def test_the_final_evaluation_fits_the_probe_once_with_the_same_accuracies(
    shared_data, monkeypatch
):
    """The linear probe is fitted on the training split: the final evaluation of the validation
    and the test split fits it once (the same full-batch fit either way), and a later step
    fits it anew."""
    from vaestudy.training import evaluation

    cfg = make_cfg(shared_data, model={"conditional": True}, train={"epochs": 0.2})
    trainer = Trainer(cfg)
    trainer._train_loop(None, None)  # `fit` without its final evaluation
    fresh = [  # a probe fitted for each split, as before the cache
        evaluation.evaluate_on_device(trainer.model, trainer.objective, trainer.data, cfg.train,
                                      trainer.step_t, split=split)["probe_acc"].item()
        for split in ("val", "test")
    ]  # fmt: skip
    fits = []
    original = evaluation.fit_probe
    monkeypatch.setattr(
        evaluation, "fit_probe", lambda *a, **k: fits.append(1) or original(*a, **k)
    )
    result = trainer.final_result()
    assert len(fits) == 1
    assert [result.val["probe_acc"], result.test["probe_acc"]] == pytest.approx(fresh, abs=1e-7)
    trainer.step += 1  # other weights: a new fit
    trainer.evaluate(full=True, split="val")
    assert len(fits) == 2
