"""Datasets resident on the training device, in their compact type.

Each split is read once by its dataset (`vaestudy.training.datasets`: files under `root` in the
dataset's published layout) into one tensor of images [N, C, H, W] and moved to the device once:
no DataLoader, no host round trip in the training loop. Images stay in their compact type on the
device: uint8 intensities 0..255 (a dataset's own uint8, kept as stored; one resized by
`data.image_size` is rounded back to uint8 after the area interpolation), or float32 in [0, 1]
for a dataset that gives floats. `images()` turns a batch into float32 intensities on the
device, so a trial holds 1 byte per pixel (dSprites' 663,552 training images: 2.7 GB, not 10.9).
Labels are integers 0..K−1 (K = `n_classes`); an unlabelled dataset has K = 0 and all-zero
labels, and a conditional model refuses it.

Three splits: train, validation (`data.validation` images carved from the training split by a
permutation drawn with `data.seed`: disjoint from train, the same for every run with that seed)
and test (the dataset's own test split). Validation steers and selects; test is the verdict.

Everything random about the splits is drawn on the host, with CPU generators seeded by
`data.seed`, before anything moves to the device: the validation split and the one-off
binarisation of the held-out images (`pixels: binarized`; stored as 0 or 255) are the same on
every device, so a trial trained on a GPU and `vaestudy train` on a CPU score the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vaestudy.config.run import DataConfig
from vaestudy.errors import DataError
from vaestudy.training.datasets import Dataset, data_problem, dataset_class
from vaestudy.training.datasets.base import Part

Split = Literal["val", "test"]


def images(x: Tensor) -> Tensor:
    """Stored images (uint8 0..255, or floats in [0, 1]) as float32 intensities in [0, 1], on
    their device: what the model sees. Binarised images (0 or 255) become exactly 0 and 1."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _stored(intensities: Tensor, dtype: torch.dtype) -> Tensor:
    """Float intensities in [0, 1] back in the stored type `dtype` (uint8: rounded to 0..255)."""
    if dtype != torch.uint8:
        return intensities
    return intensities.mul(255.0).round_().to(torch.uint8)


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on `device` seeded with `seed` (training's dynamic binarisation draws from
    it: CUDA kernels take only a generator of their own device). Its state, `get_state()`, is
    a CPU ByteTensor on every device."""
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class DeviceData:
    """Train, validation and test splits on one device, in their compact stored type (see the
    module doc; `images()` converts). `val_x` and `test_x` are what evaluation scores
    (binarised once on the host, with the data seed, when pixels are `binarized`). With
    `data.validation: 0` the validation split *is* the test split (`selects_on_test`)."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    binarize: bool
    n_classes: int
    selects_on_test: bool = False

    def to(self, device: torch.device | str) -> DeviceData:
        """The same splits on `device` (one copy each; already there: no copy)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        if self.selects_on_test:  # one tensor, not two copies
            moved["val_x"], moved["val_y"] = moved["test_x"], moved["test_y"]
        return replace(self, **moved)

    def split(self, name: Split) -> tuple[Tensor, Tensor]:
        """The stored images and labels of a held-out split."""
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
        """Training batch at on-device indices `idx` as float32 intensities (dynamically
        binarised if configured, with `generator`, which must be on the data's device)."""
        x = images(self.train_x[idx])
        if self.binarize:
            x = torch.bernoulli(x, generator=generator)
        return x, self.train_y[idx]


def _read_split(source: Dataset, part: Part, limit: int | None) -> tuple[Tensor, Tensor | None]:
    """The first `limit` images of one split (all: None) in their compact type [N, C, H, W]
    (see the module doc) and long labels (or None); cut before anything is converted."""
    cfg = source.cfg
    try:
        arrays, labels = source.read(part)
        x = torch.as_tensor(arrays)[:limit]
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"{cfg.dataset}: cannot load from {cfg.root}: {exc}") from None
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise DataError(
            f"{cfg.dataset}: {part} images have shape {tuple(x.shape)}; expected [N, C, H, W]"
        )
    dtype = torch.uint8 if x.dtype == torch.uint8 else torch.float32
    if dtype != torch.uint8:
        x = x.float()
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise DataError(
                f"{cfg.dataset}: {part} intensities span [{x.min():.3g}, {x.max():.3g}]; "
                "expected uint8 images or floats in [0, 1]"
            )
    if cfg.image_size and x.shape[2:] != (cfg.image_size, cfg.image_size):
        size = (cfg.image_size, cfg.image_size)
        x = _stored(F.interpolate(images(x), size=size, mode="area"), dtype)
    return x.contiguous(), None if labels is None else torch.as_tensor(labels)[:limit].long()


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


def read_data(cfg: DataConfig) -> DeviceData:
    """Read the splits into host memory and carve the validation split (see the module doc);
    `.to(device)` puts them on the training device."""
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
    if cfg.pixels == "binarized":  # val, then test, from one stream: val never depends on test
        g = torch.Generator().manual_seed(cfg.seed)
        val_x = _stored(torch.bernoulli(images(val_x), generator=g), val_x.dtype)
        test_x = _stored(torch.bernoulli(images(test_x), generator=g), test_x.dtype)
    if not len(val_idx):  # data.validation: 0
        val_x, val_y = test_x, test_y
    return DeviceData(
        train_x,
        train_y,
        val_x,
        val_y,
        test_x,
        test_y,
        binarize=cfg.pixels == "binarized",
        n_classes=n_classes,
        selects_on_test=not len(val_idx),
    )


def load_data(cfg: DataConfig, device: torch.device) -> DeviceData:
    """Read the splits on the host (`read_data`) and move them to `device` once."""
    return read_data(cfg).to(device)
