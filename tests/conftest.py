"""What the tests share: the tiers, the data, one Ray session and one tracking server, and the
helpers that write study files and run the CLI."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
import yaml
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import vaestudy  # noqa: F401  (first: sets Ray's environment before anything imports ray)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

# A study's trials in seconds: `--set` overrides for any study on the shared MNIST subset.
TINY = [
    "data.train_limit=444",  # 400 to train on, 44 for validation
    "data.test_limit=100",
    "train.batch_size=40",
    "train.epochs=1",
    "train.log_every=2",
    "train.iwae_samples=5",
    "study.resources.cpu=0.5",
]

# GECO's multiplicative rule: its runaway λ (the divergence tests' fault) is one setting away.
GECO_RULE = {"init": 1.0, "update": "geco", "lr": 1e-4, "ema": 0.99, "min": 1e-6, "max": 1e4,
             "warmup_steps": 20}  # fmt: skip

FEASIBLE_GECO = {  # recon after 10 steps is ~260 nats: every trial meets κ and the yardstick
    "search": {
        "objective.kappa": {"uniform": [400.0, 500.0]},
        "objective.multiplier.init": {"loguniform": [0.1, 10.0]},
    },
    "constraints": [{"metric": "recon", "bound": 1000.0}],
}

CLI = [sys.executable, "-m", "vaestudy.cli"]


def write_study(tmp_path: Path, shared_data: Path, **study_changes: Any) -> Path:
    """`studies/geco.yaml` on the shared data, with GECO's own multiplier rule and search."""
    raw = yaml.safe_load((REPO / "studies" / "geco.yaml").read_text())
    raw["data"]["root"] = str(shared_data)
    raw["objective"]["multiplier"] = dict(GECO_RULE)
    raw["study"]["search"] = {
        "objective.kappa": {"uniform": [80.0, 120.0]},
        "objective.multiplier.init": {"loguniform": [0.1, 10.0]},
        "objective.multiplier.lr": {"loguniform": [1.0e-5, 1.0e-3]},
        "objective.multiplier.ema": {"uniform": [0.9, 0.999]},
    }
    raw["study"]["resources"] = {"cpu": 1, "gpu": 0}  # trains on CPU: this machine has no GPU
    raw["study"]["sampler"] = {"kind": "tpe", "seed": 0}  # quick to suggest; tests of the GP ask
    raw["study"].update(study_changes)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(args: list[str], cwd: Path, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess:
    """`vaestudy ARGS` in a process of its own, as a user runs it."""
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw
    )


def sets(overrides: list[str]) -> list[str]:
    """`--set` flags for each override."""
    return [item for o in overrides for item in ("--set", o)]


def children(client: MlflowClient, parent_id: str) -> list:
    """The trial runs of the study run `parent_id`."""
    from vaestudy.tracking.tags import PARENT

    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT}` = '{parent_id}'"
    )


def steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    """The steps at which run `run_id` logged metric `key`."""
    return [m.step for m in client.get_metric_history(run_id, key)]


# The `slow` tier: every test that needs a Ray runtime or a tracking server (directly or through
# another fixture), besides those marked `slow` by hand (they start servers or `vaestudy run`
# themselves). `pytest -m "not slow"` runs the rest in a few minutes; CI runs both.
SLOW_FIXTURES = {"server", "ray_session", "cluster"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(), (
        f"the MNIST subset is expected at {SHARED_DATA}"
    )
    return SHARED_DATA


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 images [N, 28, 28] and labels [N] in the IDX format torchvision reads."""
    folder.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    with open(folder / f"{prefix}-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28))
        f.write(images.astype(np.uint8).tobytes())
    with open(folder / f"{prefix}-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">II", 2049, n))
        f.write(labels.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A 71/32-image MNIST-layout dataset with known pixel values under tmp_path: 64 training
    images once the default validation split (10%: 7) is carved."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    for prefix, n in (("train", 71), ("t10k", 32)):
        write_idx(raw, prefix, rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10)
    return tmp_path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test that runs a study (start-up costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def server_db(tmp_path_factory) -> Path:
    """The SQLite file behind `server`."""
    return tmp_path_factory.mktemp("store") / "mlflow.db"


@pytest.fixture(scope="session")
def server(server_db: Path):
    """One MLflow tracking server over a fresh SQLite store for the whole test session."""
    from vaestudy.tracking.stores import serve

    with serve(f"sqlite:///{server_db}") as uri:
        yield uri


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# CUDA without a GPU (../shared/notes/gpu-without-a-gpu.md): fake CUDA tensors run every op of
# a step for shapes, dtypes and devices without computing anything; mixing a CPU tensor into a
# CUDA op raises FakeTensorDeviceMismatchError, as a GPU would; `DeviceTraffic` records host
# syncs (`.item()`, `.tolist()`, `float(t)` on a CUDA tensor) and host-to-device copies.


class DeviceTraffic(TorchDispatchMode):
    """Records every op that reads a CUDA value on the host (a sync) or copies a non-scalar
    CPU tensor to CUDA, with the vaestudy line that asked for it."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        out = func(*args, **kwargs)
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if func is torch.ops.aten._local_scalar_dense.default and inputs[0].is_cuda:
            self.events.append(f"host sync ({func}) at {_caller()}")
        elif any(t.is_cuda for t in outputs) and any(
            t.device.type == "cpu" and t.dim() > 0 for t in inputs
        ):
            self.events.append(f"host-to-device copy ({func}) at {_caller()}")
        return out


def _caller() -> str:
    import traceback

    ours = [f for f in traceback.extract_stack() if f"{os.sep}vaestudy{os.sep}" in f.filename]
    return f"{ours[-1].filename}:{ours[-1].lineno}: {ours[-1].line}" if ours else "?"


def _zero_grads_of_leaves(tensors, *args: Any, **kwargs: Any) -> None:
    """Stands in for `torch.autograd.backward`: the autograd engine needs a CUDA context that
    no fake tensor can give. Each leaf the graph reaches gets a zero gradient of its own shape,
    dtype and device, as the real backward would give it (kernels inside the backward neither
    sync nor mix devices: only Python code around them could)."""
    stack = [t.grad_fn for t in ([tensors] if isinstance(tensors, torch.Tensor) else tensors)]
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)
        if leaf is not None and leaf.grad is None:
            leaf.grad = torch.zeros_like(leaf)
        stack.extend(next_node for next_node, _ in node.next_functions)


def _no_grads(outputs, inputs, *args: Any, **kwargs: Any) -> tuple[None, ...]:
    """Stands in for `torch.autograd.grad` (as above): None for every input, which
    `torch.func.grad` turns into zeros of the input's shape and device."""
    return tuple(None for _ in (inputs if isinstance(inputs, (list, tuple)) else [inputs]))


class FakeCuda:
    """`with fake_cuda:` runs its block on fake CUDA tensors; `with fake_cuda.watch() as
    events:` records `DeviceTraffic` inside it. `generators` lists the devices vaestudy asked
    CUDA generators for (a CPU generator stands in: none can be made without a driver)."""

    def __init__(self) -> None:
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)
        self.generators: list[torch.device] = []
        self.rng_states: list[torch.Tensor] = []

    def __enter__(self) -> FakeCuda:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)

    @contextlib.contextmanager
    def watch(self) -> Iterator[list[str]]:
        traffic = DeviceTraffic()
        with traffic:
            yield traffic.events

    def generator(self, device: torch.device, seed: int) -> torch.Generator:
        self.generators.append(torch.device(device))
        return torch.Generator().manual_seed(seed)

    def set_rng_state(self, state: torch.Tensor, device: Any = "cuda") -> None:
        """As CUDA's: it takes a CPU ByteTensor of its own generator's size and nothing else."""
        if state.device.type != "cpu" or state.dtype != torch.uint8:
            raise TypeError("RNG state must be a torch.ByteTensor")
        self.rng_states.append(state)


CUDA_RNG_STATE_BYTES = 16  # a CUDA (Philox) generator's state: seed and offset


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCuda:
    import vaestudy.training.trainer as trainer

    fake = FakeCuda()
    monkeypatch.setattr(torch.autograd, "backward", _zero_grads_of_leaves)
    monkeypatch.setattr(torch.autograd, "grad", _no_grads)
    monkeypatch.setattr(trainer, "device_generator", fake.generator)
    monkeypatch.setattr(
        torch.cuda,
        "get_rng_state",
        lambda device="cuda": torch.zeros(CUDA_RNG_STATE_BYTES, dtype=torch.uint8),
    )
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set_rng_state)
    return fake
