"""Arrays in one file: `data.root` is a `.npz` (numpy) or `.pt` (torch.save) file holding
`train_x` and `test_x`, images [N, C, H, W] or [N, H, W], uint8 0..255 or floats in [0, 1],
and optionally `train_y` and `test_y`, integer labels [N] (without them the data are
unlabelled). The check opens the file and, for `.npz`, reads every array's header (shape,
dtype) and size; a `.pt` file's arrays are checked when it is read."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part

KEYS = ("train_x", "test_x")
LABELS = ("train_y", "test_y")


class TensorFile(Dataset):
    layout = (
        "a .npz or .pt file with train_x and test_x ([N, C, H, W] or [N, H, W], uint8 or floats "
        "in [0, 1]) and optionally train_y and test_y (integer labels [N])"
    )

    def problem(self) -> str | None:
        path = self.root
        if path.suffix not in (".npz", ".pt"):
            return f"tensors: data.root {path} should be a .npz or .pt file: {self.layout}"
        if not path.is_file():
            return f"tensors: {path.resolve()} not found: {self.layout}"
        try:
            with zipfile.ZipFile(path) as archive:  # both formats are zip archives
                bad = archive.testzip()
                names = archive.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            return (
                f"tensors: {path}: not a readable {path.suffix} file ({exc}): truncated or damaged"
            )
        if bad is not None:
            return f"tensors: {path}: member {bad} is damaged (CRC mismatch)"
        if path.suffix == ".npz":
            return self._npz_problem(names)
        return None

    def shape(self) -> tuple[int, int, int] | None:
        """From `train_x`'s header in a `.npz` (not read); unknown for `.pt` until it is read."""
        if self.root.suffix != ".npz":
            return None
        shape, _ = npz_header(self.root, "train_x")
        return (shape[1], shape[2], shape[3]) if len(shape) == 4 else (1, shape[1], shape[2])

    def count(self, part: Part) -> int | None:
        return npz_header(self.root, f"{part}_x")[0][0] if self.root.suffix == ".npz" else None

    def pixel_bytes(self) -> int:
        """uint8 images stay uint8; floats are kept as float32."""
        if self.root.suffix != ".npz":
            return 4
        return 1 if npz_header(self.root, "train_x")[1] == "uint8" else 4

    def _npz_problem(self, names: list[str]) -> str | None:
        import numpy as np

        arrays = {n.removesuffix(".npy") for n in names}
        missing = [k for k in KEYS if k not in arrays]
        if missing:
            return f"tensors: {self.root} has {sorted(arrays)}, lacks {missing}: {self.layout}"
        with np.load(self.root, allow_pickle=False) as f:
            return _shape_problem(str(self.root), {k: f[k] for k in arrays & {*KEYS, *LABELS}})

    def read(self, part: Part) -> tuple[Any, Any | None]:
        import numpy as np
        import torch

        if self.root.suffix == ".npz":  # `problem` has checked its arrays: read this part's
            with np.load(self.root, allow_pickle=False) as f:
                arrays = {k: f[k] for k in (f"{part}_x", f"{part}_y") if k in f.files}
        else:  # a .pt file is checked once loaded
            arrays = torch.load(self.root, map_location="cpu", weights_only=True)
            if not isinstance(arrays, dict):
                raise ValueError(f"{self.root}: expected a dict of tensors: {self.layout}")
            if problem := _shape_problem(str(self.root), arrays):
                raise ValueError(problem)
        x, y = arrays[f"{part}_x"], arrays.get(f"{part}_y")
        x = torch.as_tensor(x)
        return x, None if y is None else torch.as_tensor(y).long()


def npz_header(path: Path, name: str) -> tuple[tuple[int, ...], str]:
    """(shape, dtype name) of array `name` in the `.npz` at `path`, from its header alone."""
    import numpy as np

    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = {1: np.lib.format.read_array_header_1_0}
        shape, _, dtype = read_header.get(major, np.lib.format.read_array_header_2_0)(f)
    return tuple(shape), np.dtype(dtype).name


def _shape_problem(where: str, arrays: dict[str, Any]) -> str | None:
    """Why the arrays do not fit the layout (image ranks and dtypes, label counts), or None."""
    shapes = {}
    for key in KEYS:
        if key not in arrays:
            return f"tensors: {where} lacks {key}"
        x = arrays[key]
        if len(x.shape) not in (3, 4):
            return (
                f"tensors: {where}: {key} has shape {tuple(x.shape)}; expected [N, C, H, W] or "
                "[N, H, W]"
            )
        shapes[key] = tuple(x.shape[1:]) if len(x.shape) == 4 else (1, *x.shape[1:])
        if "uint8" not in str(x.dtype) and "float" not in str(x.dtype):
            return f"tensors: {where}: {key} is {x.dtype}; expected uint8 or floats in [0, 1]"
    if shapes["train_x"] != shapes["test_x"]:
        train, test = shapes["train_x"], shapes["test_x"]
        return f"tensors: {where}: train_x images are {train}, test_x images {test}"
    for key, images in zip(LABELS, KEYS, strict=True):
        if key in arrays and tuple(arrays[key].shape) != (arrays[images].shape[0],):
            return (
                f"tensors: {where}: {key} has shape {tuple(arrays[key].shape)} for "
                f"{arrays[images].shape[0]} images in {images}"
            )
    if (LABELS[0] in arrays) != (LABELS[1] in arrays):
        return (
            f"tensors: {where}: labels for one split only; give both train_y and test_y or neither"
        )
    return None
