"""CIFAR-10 in torchvision's layout (the "python version" archive, unpacked):
`<root>/cifar-10-batches-py/` with `data_batch_1` … `data_batch_5` (train) and `test_batch`, each a
pickled dict holding `data`, uint8 [N, 3072] (3×32×32, channel-major), and `labels`, N ints 0..9.
The check unpickles each file (numpy, no torch): a truncated or damaged file is named."""

from __future__ import annotations

import pickle
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part

FOLDER = "cifar-10-batches-py"
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
SHAPE = (3, 32, 32)


class Cifar10(Dataset):
    layout = f"{FOLDER}/ with {', '.join(FILES['train'] + FILES['test'])} (the python version)"

    def shape(self) -> tuple[int, int, int]:
        return SHAPE

    def count(self, part: Part) -> int:
        """10,000 images in each batch file of the published layout."""
        return 10_000 * len(FILES[part])

    def _batch(self, name: str) -> tuple[Any, Any]:
        """(images [N, 3, 32, 32] uint8, labels [N]) of one batch file; ValueError says why
        it cannot be read."""
        import numpy as np

        path = self.root / FOLDER / name
        try:
            with path.open("rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a readable CIFAR-10 batch (a pickled dict of 'data' and 'labels'): "
                f"{type(exc).__name__}: {exc}; the file is truncated or damaged, copy it again"
            ) from None
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(
                f"{path}: 'data' is {data.dtype} {data.shape}; CIFAR-10 holds uint8 [N, 3072]"
            )
        if labels.shape != (data.shape[0],):
            raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
        return data.reshape(-1, *SHAPE), labels

    def problem(self) -> str | None:
        folder = self.root / FOLDER
        missing = [n for n in FILES["train"] + FILES["test"] if not (folder / n).is_file()]
        if missing:
            return (
                f"cifar10 not found: looked in {folder.resolve()} for {self.layout}; missing "
                f"{', '.join(missing)}. Point data.root at the folder holding {FOLDER}/."
            )
        try:
            for name in FILES["train"] + FILES["test"]:
                self._batch(name)
        except ValueError as exc:
            return f"cifar10: {exc}"
        return None

    def read(self, part: Part) -> tuple[Any, Any]:
        import numpy as np
        import torch

        batches = [self._batch(name) for name in FILES[part]]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
