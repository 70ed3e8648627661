"""What the tests share: the tiers, the data, one Ray session and one tracking server, and the
helpers that write study files and run the CLI."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
import yaml

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
