"""Datasets resident on the training device.

Each split is read once by its dataset (`vaestudy.training.datasets`: files under `root` in the
dataset's published layout), turned into one float tensor of intensities in [0, 1] with shape
[N, C, H, W] on the device, and batches are slices of an on-device permutation: no DataLoader,
no host round trip in the training loop. Labels are integers 0..K−1 (K = `n_classes`); an
unlabelled dataset has K = 0 and all-zero labels, and a conditional model refuses it.

Three splits: train, validation (`data.validation` images carved from the training split by a
permutation drawn with `data.seed`: disjoint from train, the same for every run with that seed)
and test (the dataset's own test split). Validation steers and selects; test is the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vaestudy.config.run import DataConfig
from vaestudy.errors import DataError
from vaestudy.training.datasets import Dataset, data_problem, dataset_class
from vaestudy.training.datasets.base import Part

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
    n_classes: int
    selects_on_test: bool = False

    def split(self, name: Split) -> tuple[Tensor, Tensor]:
        """The images and labels of a held-out split."""
        return (self.val_x, self.val_y) if name == "val" else (self.test_x, self.test_y)

    @property
    def n_train(self) -> int:
        return self.train_x.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape, (C, H, W)."""
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    def batch(self, idx: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Training batch at on-device indices `idx` (dynamically binarised if configured)."""
        x = self.train_x[idx]
        if self.binarize:
            x = torch.bernoulli(x, generator=generator)
        return x, self.train_y[idx]


def _read_split(source: Dataset, part: Part, limit: int | None) -> tuple[Tensor, Tensor | None]:
    """The first `limit` images of one split (all: None) as float intensities [N, C, H, W] in
    [0, 1] and long labels (or None); cut before they are converted."""
    cfg = source.cfg
    try:
        images, labels = source.read(part)
        x = torch.as_tensor(images)[:limit]
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"{cfg.dataset}: cannot load from {cfg.root}: {exc}") from None
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(
            f"{cfg.dataset}: {part} images have shape {tuple(x.shape)}; expected [N, C, H, W]"
        )
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if cfg.image_size and x.shape[2:] != (cfg.image_size, cfg.image_size):
        x = F.interpolate(x, size=(cfg.image_size, cfg.image_size), mode="area")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(
            f"{cfg.dataset}: {part} intensities span [{x.min():.3g}, {x.max():.3g}]; expected "
            "uint8 images or floats in [0, 1]"
        )
    return x, None if labels is None else torch.as_tensor(labels)[:limit].long()


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
    problem = data_problem(cfg)
    if problem is not None:
        raise DataError(problem)
    source = dataset_class(cfg.dataset)(cfg)
    splits = []
    for part, limit in (("train", cfg.train_limit), ("test", cfg.test_limit)):
        splits.append(_read_split(source, part, limit))
    (train_x, train_y), (test_x, test_y) = splits
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{cfg.dataset}: train images are {tuple(train_x.shape[1:])}, test images "
            f"{tuple(test_x.shape[1:])}"
        )
    n_classes = (
        0 if train_y is None or test_y is None else int(max(train_y.max(), test_y.max())) + 1
    )
    if not n_classes:  # unlabelled
        train_y = torch.zeros(len(train_x), dtype=torch.long)
        test_y = torch.zeros(len(test_x), dtype=torch.long)
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
        n_classes=n_classes,
        selects_on_test=not len(val_idx),
    )
