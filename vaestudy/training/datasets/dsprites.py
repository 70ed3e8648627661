"""dSprites (Matthey et al. 2017) in its published file, under `data.root`:
`dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz` with `imgs`, uint8 {0, 1} [737280, 64, 64],
and the generative factors `latents_classes`, [737280, 6] (colour, shape, scale, orientation,
x, y). Labels are the shape (square, ellipse, heart: 0, 1, 2); `factors(part)` gives all six.
dSprites has no test split: a fixed 10% of the images (a permutation drawn with seed 0, the same
for every run) is the test split. The check reads the archive's member list and checks their
integrity (CRC). All 663,552 training images take 2.7 GB on the device (uint8, converted per
batch; 10.9 GB as float32): `data.train_limit` takes fewer."""

from __future__ import annotations

import functools
import zipfile
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part
from vaestudy.training.datasets.tensors import npz_header

FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
TEST_FRACTION = 0.1
SHAPE_FACTOR = 1  # the column of latents_classes holding the shape


class DSprites(Dataset):
    layout = f"{FILE} (imgs, latents_classes, latents_values)"

    def shape(self) -> tuple[int, int, int]:
        return (1, 64, 64)

    def problem(self) -> str | None:
        path = self.root / FILE
        if not path.is_file():
            return (
                f"dsprites not found: looked for {path.resolve()}. Point data.root at the folder "
                f"holding {FILE}."
            )
        try:
            with zipfile.ZipFile(path) as archive:
                names = {n.removesuffix(".npy") for n in archive.namelist()}
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile) as exc:
            return f"dsprites: {path}: not a readable .npz file ({exc}): truncated or damaged"
        if bad is not None:
            return f"dsprites: {path}: member {bad} is damaged (CRC mismatch); copy it again"
        if not {"imgs", "latents_classes"} <= names:
            return f"dsprites: {path} holds {sorted(names)}; expected {self.layout}"
        return None

    def count(self, part: Part) -> int:
        """From the archive's header of `imgs`: the fixed 10% test split, the rest train."""
        n = npz_header(self.root / FILE, "imgs")[0][0]
        n_test = round(TEST_FRACTION * n)
        return n_test if part == "test" else n - n_test

    @functools.cached_property
    def _arrays(self) -> tuple[Any, Any]:
        """(imgs, latents_classes), read once per instance (both splits come from them)."""
        import numpy as np

        with np.load(self.root / FILE, allow_pickle=False) as f:
            return f["imgs"], f["latents_classes"]

    def _split(self, part: Part) -> tuple[Any, Any]:
        import numpy as np

        images, factors = self._arrays
        if images.ndim != 3 or factors.shape != (len(images), 6):
            raise ValueError(
                f"{self.root / FILE}: imgs {images.shape}, latents_classes {factors.shape}; "
                "expected [N, 64, 64] and [N, 6]"
            )
        order = np.random.default_rng(0).permutation(len(images))
        n_test = round(TEST_FRACTION * len(images))
        idx = np.sort(order[:n_test] if part == "test" else order[n_test:])
        return images[idx], factors[idx]

    def factors(self, part: Part) -> Any:
        """The six generative factors' class indices of each image of `part`, [N, 6]."""
        return self._split(part)[1]

    def read(self, part: Part) -> tuple[Any, Any]:
        import numpy as np

        images, factors = self._split(part)
        return (images[:, None] * 255).astype(np.uint8), factors[:, SHAPE_FACTOR].astype(np.int64)
