"""Datasets resident on the training device.

The whole split is read once through torchvision (raw IDX files under `root`), turned into one
float tensor of intensities in [0, 1] with shape [N, 1, 28, 28] on the device, and batches are
slices of an on-device permutation: no DataLoader, no host round trip in the training loop.

Three splits: train, validation (`data.validation` images carved from the training split by a
permutation drawn with `data.seed`: disjoint from train, the same for every run with that seed)
and test (the dataset's own test split). Validation steers and selects; test is the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision import datasets

from vaestudy.config import DataConfig
from vaestudy.dataset_files import data_problem, raw_folder
from vaestudy.errors import DataError

_DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
N_CLASSES = 10


Split = Literal["val", "test"]


@dataclass
class DeviceData:
    """Train, validation and test splits on one device. `train_x` holds intensities; `val_x`
    and `test_x` are what evaluation scores (binarised once, with the data seed, when pixels
    are `binarized`). With `data.validation: 0` the validation split *is* the test split
    (`selects_on_test`)."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    binarize: bool
    n_classes: int = N_CLASSES
    selects_on_test: bool = False

    def split(self, name: Split) -> tuple[Tensor, Tensor]:
        """The images and labels of a held-out split."""
        return (self.val_x, self.val_y) if name == "val" else (self.test_x, self.test_y)

    @property
    def n_train(self) -> int:
        return self.train_x.shape[0]

    def batch(self, idx: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training batch at on-device indices `idx` (dynamically binarised if configured)."""
        x = self.train_x[idx]
        if self.binarize:
            x = torch.bernoulli(x, generator=generator)
        return x, self.train_y[idx]


def _read_split(cfg: DataConfig, train: bool) -> tuple[Tensor, Tensor]:
    problem = data_problem(cfg)
    if problem is not None:
        raise DataError(problem)
    try:
        ds = _DATASETS[cfg.dataset](root=cfg.root, train=train, download=cfg.download)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(
            f"{cfg.dataset}: cannot load from {raw_folder(cfg).resolve()}: {exc}"
        ) from None
    return ds.data, ds.targets


def validation_indices(cfg: DataConfig, n_train: int) -> tuple[Tensor, Tensor]:
    """(train, validation) indices into the training split: a permutation drawn on the CPU
    with `data.seed` (so every device carves the same split), each part in ascending order."""
    k = cfg.validation_count(n_train)
    if k >= n_train:
        raise DataError(
            f"data.validation: {cfg.validation:g} takes {k} of the {n_train} training images; "
            "leave some to train on (a fraction below 1, or a smaller count)"
        )
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))
    return perm[k:].sort().values, perm[:k].sort().values


def load_data(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Read the splits, carve the validation split and move them to `device` once."""
    splits = []
    for train, limit in ((True, cfg.train_limit), (False, cfg.test_limit)):
        images, labels = _read_split(cfg, train)
        images, labels = images[:limit], labels[:limit]
        x = images.to(dtype=torch.float32).div_(255.0).unsqueeze(1)
        splits.append((x, labels.to(dtype=torch.long)))
    (train_x, train_y), (test_x, test_y) = splits
    train_idx, val_idx = validation_indices(cfg, train_x.shape[0])
    val_x, val_y = train_x[val_idx], train_y[val_idx]
    train_x, train_y = train_x[train_idx], train_y[train_idx]
    held_out = [t.to(device) for t in (val_x, val_y, test_x, test_y)]
    if cfg.pixels == "binarized":  # val, then test, from one stream: val never depends on test
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        held_out[0] = torch.bernoulli(held_out[0], generator=g)
        held_out[2] = torch.bernoulli(held_out[2], generator=g)
    val_x, val_y, test_x, test_y = held_out
    if not len(val_idx):  # data.validation: 0
        val_x, val_y = test_x, test_y
    return DeviceData(
        train_x.to(device),
        train_y.to(device),
        val_x,
        val_y,
        test_x,
        test_y,
        binarize=cfg.pixels == "binarized",
        selects_on_test=not len(val_idx),
    )
