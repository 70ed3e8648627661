import struct

import numpy as np
import pytest
import torch

from tests.conftest import write_idx
from vaestudy.config.run import DataConfig
from vaestudy.errors import DataError
from vaestudy.training.data import images as intensities
from vaestudy.training.data import load_data
from vaestudy.training.datasets import data_problem

CPU = torch.device("cpu")


def test_loads_idx_files_written_by_the_test(tmp_path):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[1, 5, 7], images[2] = 255, 51, 255
    raw = tmp_path / "MNIST" / "raw"
    write_idx(raw, "train", images, np.array([7, 1, 4]))
    write_idx(raw, "t10k", images[:2], np.array([2, 3]))
    data = load_data(DataConfig(root=str(tmp_path), pixels="bernoulli", validation=0), CPU)
    assert data.train_x.shape == (3, 1, 28, 28) and data.train_x.dtype == torch.uint8  # as stored
    assert data.train_x[0, 0, 0, 0] == 255 and data.train_x[1, 0, 5, 7] == 51
    assert intensities(data.train_x)[1, 0, 5, 7] == pytest.approx(0.2)
    assert data.train_y.tolist() == [7, 1, 4] and data.test_y.tolist() == [2, 3]
    x, y = data.batch(torch.tensor([2, 0]))
    assert torch.equal(y, torch.tensor([4, 7])) and x[0].min() == 1.0


def test_binarized_batches_are_fresh_samples_and_test_split_is_fixed(tiny_mnist):
    cfg = DataConfig(root=str(tiny_mnist), pixels="binarized", seed=3)
    data = load_data(cfg, CPU)
    assert set(data.test_x.unique().tolist()) <= {0, 255}
    assert set(intensities(data.test_x).unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(data.test_x, load_data(cfg, CPU).test_x)
    idx = torch.arange(8)
    a, _ = data.batch(idx)
    b, _ = data.batch(idx)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)


def test_limits_and_shared_subset(shared_data):
    cfg = DataConfig(root=str(shared_data), train_limit=100, test_limit=50)
    data = load_data(cfg, CPU)  # the validation split: 10% of the 100 training images
    assert data.train_x.shape[0] == 90 and data.val_x.shape[0] == 10
    assert data.test_x.shape[0] == 50
    full = load_data(DataConfig(root=str(shared_data), validation=0), CPU)
    assert full.n_train == 4000 and full.test_x.shape[0] == 1000
    assert torch.bincount(full.train_y).tolist() == [400] * 10


def _rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(row.flatten().tolist()) for row in x}  # uint8 as stored


def test_validation_split_is_disjoint_sized_and_seeded(shared_data):
    root = str(shared_data)
    cfg = DataConfig(root=root, pixels="bernoulli")  # intensities, so images compare exactly
    data = load_data(cfg, CPU)
    assert (data.n_train, data.val_x.shape[0], data.test_x.shape[0]) == (3600, 400, 1000)
    train, val, test = _rows(data.train_x), _rows(data.val_x), _rows(data.test_x)
    assert not train & val and not val & test  # disjoint
    assert len(train | val) == len(_rows(load_data(cfg.model_copy(update={"validation": 0}),
                                                   CPU).train_x))  # fmt: skip
    again = load_data(cfg, CPU)
    assert torch.equal(again.val_x, data.val_x) and torch.equal(again.val_y, data.val_y)
    other = load_data(cfg.model_copy(update={"seed": 1}), CPU)
    assert not torch.equal(other.val_x, data.val_x)
    assert load_data(cfg.model_copy(update={"validation": 250}), CPU).val_x.shape[0] == 250
    assert not data.selects_on_test


def test_validation_zero_is_the_test_split_and_too_large_is_refused(tiny_mnist):
    data = load_data(DataConfig(root=str(tiny_mnist), validation=0), CPU)
    assert data.selects_on_test and torch.equal(data.val_x, data.test_x) and data.n_train == 71
    with pytest.raises(DataError, match="data.validation: 71 takes 71 of the 71"):
        load_data(DataConfig(root=str(tiny_mnist), validation=71), CPU)
    with pytest.raises(ValueError, match="a whole count"):
        DataConfig(validation=2.5)


def test_missing_data_names_root_and_files(tmp_path):
    with pytest.raises(DataError) as err:
        load_data(DataConfig(root=str(tmp_path / "nowhere")), CPU)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "data.root" in msg


@pytest.mark.parametrize(
    "cut, message",
    [
        ("train-images-idx3-ubyte", "train-images-idx3-ubyte (56,000 bytes, but its header says "
         "71x28x28 uint8 = 55,680 bytes"),
        ("t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte (20 bytes, but its header says 32 "
         "uint8 = 40 bytes"),
    ],
)  # fmt: skip
def test_a_truncated_or_padded_idx_file_is_named_with_its_sizes(tiny_mnist, cut, message):
    path = tiny_mnist / "MNIST" / "raw" / cut
    body = path.read_bytes()
    path.write_bytes(body + bytes(320) if cut.startswith("train") else body[:20])
    problem = data_problem(DataConfig(root=str(tiny_mnist)))
    assert problem is not None and message in problem and "truncated or damaged" in problem


def test_labels_must_match_the_images(tiny_mnist):
    write_idx(tiny_mnist / "MNIST" / "raw", "t10k", np.zeros((32, 28, 28)), np.zeros(32))
    labels = tiny_mnist / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">II", 2049, 30) + bytes(30))
    problem = data_problem(DataConfig(root=str(tiny_mnist)))
    assert problem is not None and "32 images but t10k-labels-idx1-ubyte 30 labels" in problem
