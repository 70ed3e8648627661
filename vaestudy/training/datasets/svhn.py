"""SVHN (cropped digits) in torchvision's layout: `<root>/train_32x32.mat` and `test_32x32.mat`
(MATLAB files: `X`, uint8 [32, 32, 3, N], and `y`, [N, 1] with 10 standing for the digit 0).
The check loads each file (scipy, no torch): a truncated or damaged file is named."""

from __future__ import annotations

from typing import Any

from vaestudy.training.datasets.base import Dataset, Part

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


class Svhn(Dataset):
    layout = "train_32x32.mat and test_32x32.mat (the cropped digits, format 2)"

    def shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    def _arrays(self, part: Part) -> tuple[Any, Any]:
        """(images [N, 3, 32, 32] uint8, labels 0..9); ValueError says why not."""
        import numpy as np
        from scipy.io import loadmat

        path = self.root / FILES[part]
        try:
            mat = loadmat(path, variable_names=["X", "y"])
            x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: not a readable SVHN file ({type(exc).__name__}: {exc}); the file is "
                "truncated or damaged, copy it again"
            ) from None
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
            raise ValueError(f"{path}: X is {x.dtype} {x.shape}; SVHN holds uint8 [32, 32, 3, N]")
        if y.shape != (x.shape[3],):
            raise ValueError(f"{path}: {x.shape[3]} images but {y.size} labels")
        return x.transpose(3, 2, 0, 1), (y % 10).astype(np.int64)

    def problem(self) -> str | None:
        missing = [name for name in FILES.values() if not (self.root / name).is_file()]
        if missing:
            return (
                f"svhn not found: looked in {self.root.resolve()} for {self.layout}; missing "
                f"{', '.join(missing)}. Point data.root at the folder holding them."
            )
        try:
            for part in FILES:
                self._arrays(part)  # type: ignore[arg-type]
        except ValueError as exc:
            return f"svhn: {exc}"
        return None

    def read(self, part: Part) -> tuple[Any, Any]:
        x, y = self._arrays(part)
        return x.copy(), y
