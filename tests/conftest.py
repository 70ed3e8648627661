from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import vaestudy  # noqa: F401  (first: sets Ray's environment before anything imports ray)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


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
def server(tmp_path_factory):
    """One MLflow tracking server over a fresh SQLite store for the whole test session."""
    from vaestudy.stores import serve

    store = tmp_path_factory.mktemp("store")
    with serve(f"sqlite:///{store / 'mlflow.db'}") as uri:
        yield uri


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
