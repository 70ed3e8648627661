"""Vectorised training (torch.func): each member computes what its own Trainer computes."""

import math
from typing import Any

import pytest
import torch

from vaestudy.cli import main
from vaestudy.config.run import RunConfig
from vaestudy.errors import ConfigError
from vaestudy.training.trainer import Trainer
from vaestudy.training.vectorized import VectorTrainer


def vector_cfgs(root, objective: dict, varied: list[dict], **model: Any) -> list[RunConfig]:
    base = {
        "data": {"root": str(root), "pixels": "bernoulli"},
        "model": {"hidden": 64, "latent_dim": 4, **model},
        "train": {"epochs": 2, "batch_size": 16, "log_every": 2, "iwae_samples": 3},
    }
    out = []
    for change in varied:
        raw = {**base, "objective": {**objective, **change.get("objective", {})}}
        raw["train"] = {**base["train"], **change.get("train", {})}
        out.append(RunConfig.model_validate(raw))
    return out


def tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """λ, moving averages, targets; not the multiplier optimizer's moments."""
    return {k: v for k, v in module.state_dict().items() if not k.endswith("_extra_state")}


@pytest.mark.parametrize(
    "objective, varied",
    [
        (
            {"name": "geco", "multiplier": {"update": "geco", "lr": 1e-2}},
            [
                {"objective": {"kappa": 300.0}},
                {
                    "objective": {
                        "kappa": 500.0,
                        "multiplier": {"update": "geco", "lr": 1e-2, "init": 3.0},
                    },
                    "train": {"seed": 1},
                },
            ],
        ),
        (
            {"name": "lagvae", "multiplier": {"lr": 1e-2}},
            [{"objective": {"mi": 1.0}}, {"objective": {"mi": -1.0, "epsilon": [400.0, 1.0]}}],
        ),
        ({"name": "beta_vae"}, [{"objective": {"beta": 0.5}}, {"objective": {"beta": 4.0}}]),
        (
            {"name": "geco", "multiplier": {"update": "nupi", "lr": 1e-3, "kp": 0.05, "nu": 0.5}},
            [{"objective": {"kappa": 300.0}}, {"objective": {"kappa": 600.0}}],
        ),
        (
            {"name": "lagvae", "multiplier": {"update": "augmented", "rho": 1e-3}},
            [{"objective": {"mi": 1.0}}, {"objective": {"epsilon": [400.0, 1.0]}}],
        ),
    ],
    ids=["geco", "lagvae", "beta_vae", "geco-nupi", "lagvae-augmented"],
)
def test_vectorised_members_compute_what_each_trainer_computes(tiny_mnist, objective, varied):
    """With shared noise, every member's metrics, parameters and multipliers after each step
    equal those of its own Trainer given the same batches and random state."""
    cfgs = vector_cfgs(tiny_mnist, objective, varied)
    vt = VectorTrainer(cfgs, noise="same")
    singles = [Trainer(cfg, vt.data) for cfg in cfgs]
    idx = torch.arange(16)
    for _ in range(3):
        torch.manual_seed(7)
        values, keys = vt._train_step(idx)
        for k, single in enumerate(singles):
            torch.manual_seed(7)
            expected, expected_keys = single._train_step(idx)
            assert keys == expected_keys
            torch.testing.assert_close(values[k], expected, rtol=1e-4, atol=1e-4)
    vt._sync_members()
    for member, single in zip(vt.members, singles, strict=True):
        for (name, a), b in zip(
            member.model.state_dict().items(), single.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)  # Adam: |g|~0
        torch.testing.assert_close(tensors(member.objective), tensors(single.objective))


@pytest.mark.parametrize("conditional", [False, True], ids=["plain", "conditional"])
def test_members_with_their_own_batches_compute_what_each_seed_alone_computes(
    tiny_mnist, conditional
):
    """`batches="own"` (confirmation seeds): member k draws its epoch order and binarisation
    from its own seed, as its own Trainer does; with shared noise, the same step results (a
    conditional decoder's labels too: per member under vmap)."""
    cfgs = vector_cfgs(
        tiny_mnist,
        {"name": "geco", "multiplier": {"update": "geco", "lr": 1e-2}},
        [{"train": {"seed": s}} for s in (1000, 1001, 1002)],
        conditional=conditional,
    )
    vt = VectorTrainer(cfgs, noise="same", batches="own")
    singles = [Trainer(cfg, vt.data) for cfg in cfgs]
    perm = vt._permutation()
    assert perm.shape == (3, vt.data.n_train)
    for k, single in enumerate(singles):
        assert torch.equal(perm[k], single._permutation())
    assert not torch.equal(perm[0], perm[1])  # independent replicates, not common batches
    for step in range(3):
        torch.manual_seed(7)
        values, _ = vt._train_step(perm[..., step * 16 : (step + 1) * 16])
        for k, single in enumerate(singles):
            torch.manual_seed(7)
            expected, _ = single._train_step(perm[k, step * 16 : (step + 1) * 16])
            torch.testing.assert_close(values[k], expected, rtol=1e-4, atol=1e-4)


def test_vectorised_fit_gives_each_member_its_trajectory_and_test_metrics(tiny_mnist):
    cfgs = vector_cfgs(
        tiny_mnist,
        {"name": "geco", "multiplier": {"update": "geco", "lr": 1e-3}},
        [{"objective": {"kappa": float(k)}, "train": {"seed": k}} for k in (300, 400, 500)],
    )
    results = VectorTrainer(cfgs).fit()
    assert len(results) == 3
    for cfg, result in zip(cfgs, results, strict=True):
        assert [row["step"] for row in result.history] == [2, 4, 6, 8]
        assert all(row["target/recon"] == cfg.objective.kappa for row in result.history)
        assert math.isfinite(result.test["iwae_nll"]) and result.test["iwae_nll"] > 0
    # the members trained apart: different seeds and targets, different outcomes
    assert len({round(r.test["kl"], 4) for r in results}) == 3


def test_vectorised_members_must_share_everything_else(tiny_mnist):
    cfgs = vector_cfgs(tiny_mnist, {"name": "geco"}, [{}, {"train": {"lr": 0.1}}])
    message = "member 1 differs from member 0 in train.lr; members may differ only in train.seed"
    with pytest.raises(ConfigError, match=message):
        VectorTrainer(cfgs)


def test_train_command_runs_members_as_one_computation(tiny_mnist, tmp_path, capsys):
    config = tmp_path / "geco.yaml"
    config.write_text(
        f"data: {{root: {tiny_mnist}}}\nmodel: {{hidden: 64, latent_dim: 4}}\n"
        "objective: {name: geco}\ntrain: {epochs: 1, batch_size: 16, iwae_samples: 3}\n"
    )
    members = ["--members", "objective.kappa=[300, 500]", "--members", "train.seed=[0, 1]"]
    assert main(["train", str(config), *members]) == 0
    out = capsys.readouterr().out
    assert "300" in out and "500" in out and "iwae_nll" in out
    bad = ["--members", "objective.kappa=[300, 500]", "--members", "train.seed=[0]"]
    assert main(["train", str(config), *bad]) == 2
    assert "one common length" in capsys.readouterr().err


def test_a_diverging_member_fails_alone(tiny_mnist):
    """Member 1 starts with λ above train.max_lambda: it stops at its first trajectory point,
    with the reason; member 0 trains on and ends exactly where its own Trainer ends."""
    geco = {"name": "geco", "multiplier": {"update": "geco", "lr": 1e-3, "max": 1e12}}
    ok = {"objective": {"multiplier": {**geco["multiplier"], "init": 1.0}}}
    bad = {"objective": {"multiplier": {**geco["multiplier"], "init": 1e9}}}
    cfgs = vector_cfgs(tiny_mnist, geco, [ok, bad])
    vt = VectorTrainer(cfgs, noise="same")
    torch.manual_seed(3)
    good, failed = vt.fit()
    single = Trainer(cfgs[0], vt.data)
    torch.manual_seed(3)
    alone = single.fit()

    assert failed.diverged is not None and "lambda/recon" in failed.diverged.reason
    assert failed.test == {} and [row["step"] for row in failed.history] == [2]
    assert good.diverged is None and good.steps == alone.steps == 8
    assert [r["step"] for r in good.history] == [r["step"] for r in alone.history]
    for mine, theirs in zip(good.history, alone.history, strict=True):
        for key in ("loss", "kl", "recon", "lambda/recon"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-4), key
    for key in ("elbo", "kl", "recon", "iwae_nll"):
        assert good.test[key] == pytest.approx(alone.test[key], rel=1e-4, abs=1e-4), key


@pytest.mark.parametrize("batches", ["shared", "own"])
def test_vectorised_checkpoint_resumes_where_it_stopped(tiny_mnist, batches):
    """Save after 4 steps, load into a fresh VectorTrainer, train to 8: the stacked parameters,
    multipliers and trajectories equal those of an uninterrupted run (the checkpoint carries
    the global random state and every generator: the noise and the binarisation continue, not
    restart)."""
    cfgs = vector_cfgs(
        tiny_mnist,
        {"name": "lagvae", "multiplier": {"lr": 1e-2}},
        [{"objective": {"mi": 1.0}}, {"objective": {"mi": -1.0}, "train": {"seed": 1}}],
    )
    straight = VectorTrainer(cfgs, batches=batches)
    torch.manual_seed(5)
    straight._train_loop(None, None)

    first = VectorTrainer(cfgs, batches=batches)
    first.total_steps = 4
    torch.manual_seed(5)
    first._train_loop(None, None)
    blob = first.save_bytes()
    resumed = VectorTrainer(cfgs, batches=batches)
    torch.manual_seed(999)  # the checkpoint restores the random streams itself
    resumed.load_bytes(blob)
    resumed._train_loop(None, None)

    assert resumed.step == straight.step == 8
    for name, tensor in {**straight.trainable, **straight.state}.items():
        other = {**resumed.trainable, **resumed.state}[name]
        torch.testing.assert_close(other, tensor, msg=name)
    for a, b in zip(resumed.members, straight.members, strict=True):
        assert a.history == b.history and len(a.history) == 4
