import numpy as np
import pytest
import torch

from tests.conftest import write_idx
from vaestudy.config import DataConfig
from vaestudy.data import load_data
from vaestudy.errors import DataError

CPU = torch.device("cpu")


def test_loads_idx_files_written_by_the_test(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 5, 7], images[2] = 255, 51, 255
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "train", images, np.array([7, 1, 4]))
    write_idx(raw, "t10k", images[:2], np.array([2, 3]))
    data = load_data(DataConfig(root=str(tmp_path), pixels="bernoulli"), CPU)
    assert data.train_x.shape == (3, 1, 28, 28) and data.train_x.dtype == torch.float32
    assert data.train_x[0, 0, 0, 0] == 1.0 and data.train_x[1, 0, 5, 7] == pytest.approx(0.2)
    assert data.train_y.tolist() == [7, 1, 4] and data.test_y.tolist() == [2, 3]
    x, y = data.batch(torch.tensor([2, 0]))
    assert torch.equal(y, torch.tensor([4, 7])) and x[0].min() == 1.0


def test_binarized_batches_are_fresh_samples_and_test_split_is_fixed(tiny_mnist):
    cfg = DataConfig(root=str(tiny_mnist), pixels="binarized", seed=3)
    data = load_data(cfg, CPU)
    assert set(data.test_x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(data.test_x, load_data(cfg, CPU).test_x)
    idx = torch.arange(8)
    a, _ = data.batch(idx)
    b, _ = data.batch(idx)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)


def test_limits_and_shared_subset(shared_data):
    data = load_data(DataConfig(root=str(shared_data), train_limit=100, test_limit=50), CPU)
    assert data.train_x.shape[0] == 100 and data.test_x.shape[0] == 50
    full = load_data(DataConfig(root=str(shared_data)), CPU)
    assert full.n_train == 4000 and full.test_x.shape[0] == 1000
    assert torch.bincount(full.train_y).tolist() == [400] * 10


def test_missing_data_names_root_and_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(DataConfig(root=str(tmp_path / "nowhere")), CPU)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "data.root" in msg
