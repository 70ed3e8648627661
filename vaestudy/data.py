"""Datasets resident on the training device.

The whole split is read once through torchvision (raw IDX files under `root`), turned into one
float tensor of intensities in [0, 1] with shape [N, 1, 28, 28] on the device, and batches are
slices of an on-device permutation: no DataLoader, no host round trip in the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import datasets

from vaestudy.config import DataConfig
from vaestudy.dataset_files import data_problem, raw_folder
from vaestudy.errors import DataError

_DATASETS = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
N_CLASSES = 10


@dataclass
class DeviceData:
    """Train and test splits on one device. `x` holds intensities; `test_x` is what evaluation
    scores (binarised once, with the data seed, when pixels are `binarized`)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    binarize: bool
    n_classes: int = N_CLASSES

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


def load_data(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Read both splits and move them to `device` once."""
    splits = []
    for train, limit in ((True, cfg.train_limit), (False, cfg.test_limit)):
        images, labels = _read_split(cfg, train)
        images, labels = images[:limit], labels[:limit]
        x = images.to(device=device, dtype=torch.float32).div_(255.0).unsqueeze(1)
        splits.append((x, labels.to(device=device, dtype=torch.long)))
    (train_x, train_y), (test_x, test_y) = splits
    binarize = cfg.pixels == "binarized"
    if binarize:
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        test_x = torch.bernoulli(test_x, generator=g)
    return DeviceData(train_x, train_y, test_x, test_y, binarize)
