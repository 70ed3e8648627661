"""Where trials run: the contract between `train.device` and `study.resources.gpu` (the file
checks are in test_study.py), the GPUs a machine shows, and a trial's device memory against
the share of a GPU it asks for. This machine has no GPU: a stand-in `nvidia-smi` and a
stand-in GPU list play the driver's part."""

from __future__ import annotations

from tests.conftest import write_study
from vaestudy.config.run import DataConfig, RunConfig
from vaestudy.study import preflight
from vaestudy.study.gpus import gpu_memory
from vaestudy.study.preflight import resource_problem, study_problems
from vaestudy.study.spec import Resources, load_study
from vaestudy.training.evaluation import IWAE_CHUNK_BYTES, iwae_chunk
from vaestudy.training.memory import CUDA_CONTEXT_BYTES, trial_memory
from vaestudy.training.models import build_model

GIB = 2**30


def fake_nvidia_smi(folder, monkeypatch, rows: list[str]) -> None:
    """An `nvidia-smi` on PATH that answers the memory query with `rows`."""
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\n" + "".join(f"echo '{row}'\n" for row in rows))
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")


def test_gpu_memory_reads_nvidia_smi_and_respects_cuda_visible_devices(tmp_path, monkeypatch):
    rows = ["0, GPU-aaa, 81559", "1, GPU-bbb, 40960"]
    fake_nvidia_smi(tmp_path, monkeypatch, rows)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_memory() == [81559 * 2**20, 40960 * 2**20]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    assert gpu_memory() == [40960 * 2**20]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every GPU hidden
    assert gpu_memory() == []
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no driver
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_memory() == []


def test_a_gpu_study_where_the_cluster_has_no_gpu_is_refused_naming_what_it_has():
    nodes = [{"CPU": 2.0}, {"CPU": 2.0}, {"CPU": 4.0}]
    problem = resource_problem(Resources(cpu=1, gpu=0.25), nodes, "the Ray cluster")
    assert problem is not None
    assert "but the Ray cluster has no GPU to give it (3 nodes: 8 CPUs, 0 GPUs)" in problem
    assert "study.resources.gpu: 0 to train on CPU" in problem
    assert resource_problem(Resources(cpu=1, gpu=0.25), [*nodes, {"CPU": 8, "GPU": 1}], "") is None
    # A GPU node too small for the trial's CPUs does not count.
    small = [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 8.0}]
    assert "but no node with a GPU has 4 CPUs (2 nodes: 9 CPUs, 1 GPUs)" in resource_problem(
        Resources(cpu=4, gpu=0.5), small, "the Ray cluster"
    )
    assert resource_problem(Resources(cpu=1, gpu=0), nodes, "the Ray cluster") is None


def test_a_trial_trains_on_a_gpu_exactly_when_ray_gave_it_one(monkeypatch):
    import ray

    from vaestudy.study.trial import placed

    cfg = RunConfig()
    assert cfg.train.device == "auto"
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])  # sees the node's GPUs, was given none
    assert placed(cfg).train.device == "cpu"
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])
    assert placed(cfg).train.device == "cuda"
    assert placed(cfg).train.threads is not None  # logged: it sets the float sums' order
    explicit = RunConfig.model_validate({"train": {"device": "cpu", "threads": 2}})
    assert placed(explicit).train == explicit.train


def test_a_trials_device_memory_is_estimated_from_the_files(shared_data):
    cfg = RunConfig.model_validate(
        {"data": {"root": str(shared_data), "train_limit": 3000}, "train": {"batch_size": 100}}
    )
    parts = trial_memory(cfg, members=2)
    assert parts is not None
    assert parts["data"] == (3000 + 1000) * (784 + 8)  # uint8 pixels and long labels
    mlp = sum(p.numel() for p in build_model(cfg.model).parameters())  # built for real
    assert parts["model"] == 2 * mlp * 16  # float32 weights, gradients, Adam's two moments
    assert parts["batch"] == 2 * 100 * 784 * 4 * 8
    assert parts["evaluation"] == IWAE_CHUNK_BYTES and parts["context"] == CUDA_CONTEXT_BYTES
    unknown = cfg.model_copy(update={"data": DataConfig(dataset="svhn", root="x")})
    assert trial_memory(unknown) is None  # SVHN cannot count its images unread


def test_iwae_chunks_are_sized_in_bytes_not_images():
    small, large = iwae_chunk(100, 28 * 28), iwae_chunk(100, 3 * 64 * 64)
    assert small > large >= 1
    assert large * 100 * 3 * 64 * 64 * 16 <= IWAE_CHUNK_BYTES


def gpu_study(tmp_path, shared_data, gpu: float):
    path = write_study(tmp_path, shared_data, resources={"cpu": 1, "gpu": gpu})
    return load_study(path)


def test_a_trial_that_cannot_fit_its_share_of_the_gpu_is_refused(
    tmp_path, shared_data, monkeypatch
):
    where = {"tracking_uri": f"sqlite:///{tmp_path}/m.db", "storage_path": str(tmp_path / "r"),
             "optuna_storage": f"sqlite:///{tmp_path}/o.db"}  # fmt: skip
    monkeypatch.setattr(preflight, "gpu_memory", lambda: [8 * GIB])  # an 8 GiB GPU
    assert study_problems(gpu_study(tmp_path, shared_data, 0.25), **where) == []
    problems = study_problems(gpu_study(tmp_path, shared_data, 0.05), **where)
    assert len(problems) == 1
    assert problems[0].startswith(
        "study.resources.gpu: 0.05 of this machine's 8.0 GiB GPU is 0.40 GiB, but each trial "
        "needs about 0.77 GiB (data 0.00 GiB, model 0.01 GiB"
    ), problems[0]
    monkeypatch.setattr(preflight, "gpu_memory", list)  # no GPU at all
    problems = study_problems(gpu_study(tmp_path, shared_data, 0.25), **where)
    assert len(problems) == 1 and "but this machine has no GPU to give it" in problems[0]


def test_vaestudy_train_on_a_missing_cuda_device_says_so(tiny_mnist, capsys):
    from vaestudy.cli import main

    config = tiny_mnist / "run.yaml"
    config.write_text(f"data: {{root: {tiny_mnist}}}\ntrain: {{device: cuda, epochs: 1}}\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}: train.device: cuda, but PyTorch sees no CUDA device on this machine" in err
    assert "Traceback" not in err
