"""MNIST and Fashion-MNIST in torchvision's raw layout: `<root>/<MNIST|FashionMNIST>/raw/` with
the four IDX files (uint8 images 28×28, labels 0..9). The check reads only headers and sizes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part

RAW_FILES = {  # file: the IDX magic number (0x0803: uint8 images of rank 3; 0x0801: labels)
    "train-images-idx3-ubyte": 0x0803,
    "train-labels-idx1-ubyte": 0x0801,
    "t10k-images-idx3-ubyte": 0x0803,
    "t10k-labels-idx1-ubyte": 0x0801,
}


def idx_problem(path: Path, magic: int) -> tuple[str | None, int]:
    """(what is wrong with the IDX file at `path`, or None; its item count). An IDX file is
    its magic number (0x08 = uint8, then the rank), one big-endian uint32 per dimension, then
    the product of the dimensions in bytes: a file cut short (or padded) is caught here."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
            rank = magic & 0xFF
            dims_bytes = f.read(4 * rank)
        size = path.stat().st_size
    except OSError as exc:
        return f"{path.name} ({exc.strerror})", 0
    if int.from_bytes(head, "big") != magic:
        return f"{path.name} (not an IDX file: expected magic {magic:#010x})", 0
    if len(dims_bytes) < 4 * rank:
        return f"{path.name} (its header is cut short)", 0
    dims = [int.from_bytes(dims_bytes[4 * i : 4 * i + 4], "big") for i in range(rank)]
    expected = 4 + 4 * rank + math.prod(dims)
    if size != expected:
        shape = "x".join(map(str, dims))
        return (
            f"{path.name} ({size:,} bytes, but its header says {shape} uint8 = {expected:,} "
            "bytes: the file is truncated or damaged; copy it again)",
            dims[0],
        )
    return None, dims[0]


class Mnist(Dataset):
    folder = "MNIST"  # torchvision's class name, its folder under root
    layout = f"MNIST/raw/ with {', '.join(RAW_FILES)}"
    downloads = True

    def shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    @property
    def raw(self) -> Path:
        return self.root / self.folder / "raw"

    def problem(self) -> str | None:
        """Each file must exist, be readable, start with its IDX magic number, hold the full
        size its header states, and each split hold as many labels as images."""
        missing, unreadable, counts = [], [], {}
        for name, magic in RAW_FILES.items():
            path = self.raw / name
            if not path.is_file():
                missing.append(name)
                continue
            problem, counts[name] = idx_problem(path, magic)
            if problem:
                unreadable.append(problem)
        for split in ("train", "t10k"):
            images, labels = f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"
            if not unreadable and images in counts and counts[images] != counts.get(labels):
                unreadable.append(
                    f"{images} holds {counts[images]:,} images but {labels} "
                    f"{counts.get(labels, 0):,} labels"
                )
        if missing:
            return (
                f"{self.cfg.dataset} not found: looked in {self.raw.resolve()} for "
                f"{', '.join(RAW_FILES)}; missing {', '.join(missing)}. Point data.root at a "
                f"folder holding {self.folder}/raw/ (e.g. --set data.root=../shared/data), or "
                "set data.download=true where the network allows it."
            )
        if unreadable:
            return (
                f"{self.cfg.dataset}: cannot read {', '.join(unreadable)} in {self.raw.resolve()}"
            )
        return None

    def count(self, part: Part) -> int:
        """From the images file's header."""
        prefix = "train" if part == "train" else "t10k"
        name = f"{prefix}-images-idx3-ubyte"
        return idx_problem(self.raw / name, RAW_FILES[name])[1]

    def read(self, part: Part) -> tuple[Any, Any]:
        from torchvision import datasets

        cls = getattr(datasets, self.folder)
        ds = cls(root=str(self.root), train=part == "train", download=self.cfg.download)
        return ds.data.unsqueeze(1), ds.targets


class FashionMnist(Mnist):
    folder = "FashionMNIST"
    layout = f"FashionMNIST/raw/ with {', '.join(RAW_FILES)}"
