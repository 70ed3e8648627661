"""A dataset of one's own: dSprites-style shapes drawn by the package, no files needed.

Binary 1×32×32 images of a square, a disc or a triangle (the label: 0, 1, 2) at a random scale
(6 to 14 px across) and position; the train split (`data.train_count` images, default 3,000)
and the test split (`data.test_count`, 600) are drawn from fixed seeds, so every run sees the
same images. vaestudy reads it through the `Dataset` interface: `config` adds the two counts
to the data section, `problem()` has no files to check, `read()` draws a split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from vaestudy.config.run import DataConfig
from vaestudy.training.datasets import Dataset

SIZE = 32
SEEDS = {"train": 0, "test": 1}


class ShapesConfig(DataConfig):
    train_count: int = Field(3000, gt=0, description="training images drawn")
    test_count: int = Field(600, gt=0, description="test images drawn")


def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images [n, 1, 32, 32] (uint8: 0 or 255) and their shape labels [n]."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    scales = rng.integers(6, 15, n)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    out = np.zeros((n, 1, SIZE, SIZE), dtype=np.uint8)
    for i, (label, s) in enumerate(zip(labels, scales, strict=True)):
        top, left = rng.integers(0, SIZE - s + 1, 2)
        r, c = rows - top, cols - left  # coordinates inside the shape's box
        inside = (r >= 0) & (r < s) & (c >= 0) & (c < s)
        if label == 1:  # disc
            inside &= (r - (s - 1) / 2) ** 2 + (c - (s - 1) / 2) ** 2 <= (s / 2) ** 2
        elif label == 2:  # triangle, apex up
            inside &= np.abs(c - (s - 1) / 2) <= r / 2
        out[i, 0][inside] = 255
    return out, labels


class Shapes(Dataset):
    layout = "none: the images are drawn by vaestudy_example.shapes"
    config = ShapesConfig
    cfg: ShapesConfig

    def shape(self) -> tuple[int, int, int]:
        return (1, SIZE, SIZE)

    def read(self, part: str) -> tuple[Any, Any]:
        count = self.cfg.train_count if part == "train" else self.cfg.test_count
        return draw(count, SEEDS[part])
