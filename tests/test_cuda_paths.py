"""CUDA paths checked without a GPU (fake CUDA tensors, `fake_cuda` in conftest.py): a training
step and an evaluation of every built-in objective, alone and packed, on `device="cuda"` make no
host sync and mix no device; checkpoints cross devices; held-out data do not depend on the
device; divergences stay float32 under bfloat16 autocast."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import CUDA_RNG_STATE_BYTES
from vaestudy.config.run import RunConfig
from vaestudy.training.data import read_data
from vaestudy.training.divergences import mmd, pairwise_gaussian_kl, sq_distances
from vaestudy.training.trainer import Trainer
from vaestudy.training.vectorized import VectorTrainer

CUDA = torch.device("cuda")

# Every built-in objective, on the networks it trains with (vlae: its ladder), and the
# multiplier rules the constrained ones can use.
OBJECTIVES = {
    "elbo": ({"name": "elbo"}, {}),
    "beta_vae": ({"name": "beta_vae", "beta": 4.0}, {}),
    "kl_annealing": ({"name": "kl_annealing", "schedule": {"kind": "cyclical"}}, {}),
    "geco": ({"name": "geco", "multiplier": {"update": "geco"}}, {}),
    "geco-nupi": ({"name": "geco", "multiplier": {"update": "nupi"}}, {}),
    "lagvae": ({"name": "lagvae"}, {}),  # gradient ascent with RMSprop on λ
    "lagvae-augmented": ({"name": "lagvae", "multiplier": {"update": "augmented"}}, {}),
    "infovae": ({"name": "infovae"}, {}),
    "icvae": ({"name": "icvae"}, {"conditional": True}),
    "vlae": ({"name": "elbo"}, {"name": "vlae", "latent_dim": 2, "hidden": 8}),
    "conv": ({"name": "geco"}, {"name": "conv"}),
}


def cfg_for(root, objective: dict, model: dict, **train) -> RunConfig:
    return RunConfig.model_validate(
        {
            "data": {"root": str(root)},
            "model": {"hidden": 32, "latent_dim": 4, **model},
            "objective": objective,
            "train": {"device": "cuda", "batch_size": 16, "iwae_samples": 3, **train},
        }
    )


def check_step_and_evaluation(fake_cuda, trainer: Trainer) -> None:
    """Two training steps and a full evaluation of both held-out splits on the device: every
    result on CUDA, no host sync, no host-to-device copy (a device mix raises)."""
    idx = trainer._permutation()[..., :16]  # one copy an epoch (a pack's own batches: [K, 16])
    with fake_cuda.watch() as events:
        values = [trainer._train_step(idx)[0] for _ in range(2)]
        metrics = {**trainer.evaluate_on_device(True, "val"),
                   **trainer.evaluate_on_device(True, "test")}  # fmt: skip
    assert events == []
    assert all(v.is_cuda for v in values) and all(m.is_cuda for m in metrics.values())
    for full_only in ("iwae_nll", "active_units"):  # keys `<member>/<metric>` in a pack
        assert any(key.endswith(full_only) for key in metrics), full_only


@pytest.mark.parametrize("case", list(OBJECTIVES))
def test_a_cuda_step_and_evaluation_make_no_host_sync_and_mix_no_device(
    tiny_mnist, fake_cuda, case
):
    objective, model = OBJECTIVES[case]
    cfg = cfg_for(tiny_mnist, objective, model)
    host = read_data(cfg.data)
    with fake_cuda:
        trainer = Trainer(cfg, data=host.to(CUDA))
        assert trainer.data.train_x.is_cuda and trainer.data.train_x.dtype == torch.uint8
        assert all(p.is_cuda for p in trainer.model.parameters())
        check_step_and_evaluation(fake_cuda, trainer)
    assert [d.type for d in fake_cuda.generators] == ["cuda"]  # binarisation on the device


@pytest.mark.parametrize("batches", ["shared", "own"])  # own: confirmation seeds
@pytest.mark.parametrize("case", [c for c in OBJECTIVES if c not in ("vlae", "conv")])
def test_a_packed_cuda_step_and_evaluation_make_no_host_sync_and_mix_no_device(
    tiny_mnist, fake_cuda, case, batches
):
    objective, model = OBJECTIVES[case]
    cfgs = [cfg_for(tiny_mnist, objective, model, seed=seed) for seed in (0, 1)]
    host = read_data(cfgs[0].data)
    with fake_cuda:
        pack = VectorTrainer(cfgs, data=host.to(CUDA), batches=batches)
        check_step_and_evaluation(fake_cuda, pack)


def trained_on_cpu(root, **train) -> Trainer:
    cfg = cfg_for(root, {"name": "lagvae"}, {}, device="cpu", **train)
    trainer = Trainer(cfg)
    trainer.total_steps = 3
    trainer.fit()
    return trainer


def test_a_cpu_checkpoint_restores_on_cuda_with_step_counters_on_the_cpu(tiny_mnist, fake_cuda):
    """Adamax and the multipliers' RMSprop keep their step counters on the CPU: a checkpoint
    loaded onto the GPU must leave them there (on the GPU each step would read them back with
    `.item()`, a host sync), and CUDA's generator takes only CPU ByteTensors."""
    blob = trained_on_cpu(tiny_mnist, optimizer="adamax").save_bytes()
    cfg = cfg_for(tiny_mnist, {"name": "lagvae"}, {}, optimizer="adamax")
    host = read_data(cfg.data)
    with fake_cuda:
        trainer = Trainer(cfg, data=host.to(CUDA))
        trainer.load_bytes(blob)
        assert trainer.step == 3 and next(trainer.model.parameters()).is_cuda
    counters = [s["step"] for s in trainer.optimizer.state.values()]
    counters += [s["step"] for s in trainer.objective.multipliers.optimizer.state.values()]
    assert counters and all(c.device.type == "cpu" for c in counters)
    # A CPU checkpoint has no CUDA random state: the streams are re-seeded, nothing is set.
    assert fake_cuda.rng_states == []


def test_a_cuda_checkpoint_restores_on_cpu(tiny_mnist):
    """What a GPU trainer saves differs from a CPU one's in its random states (CUDA's are 16
    bytes, the CPU's 5,056): a CPU node restores the weights, optimiser, multipliers and
    trajectory, and re-seeds its streams from (seed, step)."""
    source = trained_on_cpu(tiny_mnist)
    state = source.state_dict()
    cuda_state = torch.zeros(CUDA_RNG_STATE_BYTES, dtype=torch.uint8)
    state["generator"] = {"cuda": cuda_state}
    state["rng"] = {"cpu": torch.get_rng_state(), "cuda": cuda_state}
    restored = trained_on_cpu(tiny_mnist, seed=1)
    restored.load_state_dict(state)
    assert restored.step == 3 and restored.history == source.history
    for a, b in zip(restored.model.parameters(), source.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(restored.objective.multipliers.value, source.objective.multipliers.value)
    restored.total_steps = 6
    assert restored.fit().steps == 6


def test_a_restore_continues_the_random_streams(tiny_mnist):
    """The global generator (reparameterisation noise) is in the checkpoint: a run stopped and
    restored trains exactly as one that was not, whatever ran in between."""
    straight = trained_on_cpu(tiny_mnist)
    straight.total_steps = 6
    straight.fit()
    blob = trained_on_cpu(tiny_mnist).save_bytes()
    resumed = Trainer(cfg_for(tiny_mnist, {"name": "lagvae"}, {}, device="cpu"))
    torch.manual_seed(1234)  # another run in the same process
    resumed.load_bytes(blob)
    resumed.total_steps = 6
    resumed.fit()
    assert resumed.history == straight.history


def test_held_out_images_are_drawn_on_the_host_whatever_the_device(tiny_mnist, monkeypatch):
    """Validation and test binarisation draw from CPU generators before the data move: moving
    the data to another device (here `meta`, which holds no values: any draw there would be
    one) draws nothing there, so every device scores the same images."""
    from vaestudy.training.data import load_data

    draws = []
    original = torch.bernoulli

    def recorded(x, *args, generator=None, **kwargs):
        draws.append((x.device.type, None if generator is None else generator.device.type))
        return original(x, *args, generator=generator, **kwargs)

    monkeypatch.setattr(torch, "bernoulli", recorded)
    cfg = cfg_for(tiny_mnist, {"name": "elbo"}, {}).data
    cpu = load_data(cfg, torch.device("cpu"))
    assert set(cpu.test_x.unique().tolist()) == {0, 255}  # binarised, stored as uint8
    assert draws == [("cpu", "cpu"), ("cpu", "cpu")]  # validation, then test
    elsewhere = load_data(cfg, torch.device("meta"))
    assert elsewhere.test_x.is_meta and draws[2:] == draws[:2]


def test_divergences_stay_float32_under_bf16_autocast():
    """Under autocast the matrix products of the pairwise KL and the MMD would run in bfloat16:
    the MMD (×10⁴ in the Lagrangian VAE's constraint) would be off by tenths of a nat."""
    torch.manual_seed(0)
    mu, logvar = torch.randn(128, 16), torch.randn(128, 16) * 0.5
    z, prior = torch.randn(128, 16), torch.randn(128, 16)
    exact = {
        "mmd": mmd(z.double(), prior.double()),
        "pairwise": pairwise_gaussian_kl(mu.double(), logvar.double()),
        "distances": sq_distances(z.double(), prior.double()),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = {
            "mmd": mmd(z, prior),
            "pairwise": pairwise_gaussian_kl(mu, logvar),
            "distances": sq_distances(z, prior),
        }
    for name, value in got.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value.double(), exact[name], rtol=1e-5, atol=1e-5, msg=name)


def test_saved_weights_are_cpu_tensors_whatever_the_device(fake_cuda, tiny_mnist):
    """`model.pt` (and anything saved through `on_cpu`) holds CPU tensors: a GPU trial's weights
    load on a machine without one."""
    from vaestudy.training.trainer import on_cpu

    cfg = cfg_for(tiny_mnist, {"name": "lagvae"}, {})
    host = read_data(cfg.data)
    with fake_cuda:
        trainer = Trainer(cfg, data=host.to(CUDA))
        trainer.objective.multipliers.optimizer.state_dict()  # the multipliers' optimiser too
        saved = on_cpu({"model": trainer.model.state_dict(),
                        "objective": trainer.objective.state_dict()})  # fmt: skip
    tensors = [*saved["model"].values(), *saved["objective"].values()]
    assert tensors and all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))
    assert next(trainer.model.parameters()).is_cuda  # copies: the trainer's stay on the device


def test_float32_precision_and_determinism_are_the_runs_settings(tiny_mnist):
    """Full float32 on CUDA by default (cuDNN would run convolutions in TF32 on Ampere and
    Hopper); `train.tf32` allows TF32, `train.deterministic` deterministic kernels only."""
    cuda_backends = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    try:
        trained_on_cpu(tiny_mnist)
        assert [b.fp32_precision for b in cuda_backends] == ["ieee", "ieee"]
        trained_on_cpu(tiny_mnist, tf32=True, deterministic=True)
        assert [b.fp32_precision for b in cuda_backends] == ["tf32", "tf32"]
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        for backend in cuda_backends:
            backend.fp32_precision = "ieee"
