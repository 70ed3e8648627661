"""Where each dataset's raw files live and whether they can be read: torchvision's raw layout,
`<root>/<MNIST|FashionMNIST>/raw/<IDX files>`. Standard library only, so that the preflight
checks (`vaestudy.preflight`) look for the data of every trial before anything starts."""

from __future__ import annotations

import math
from pathlib import Path

from vaestudy.config import DataConfig

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # torchvision's class names
RAW_FILES = {  # file: the IDX magic number (0x0803: uint8 images of rank 3; 0x0801: labels)
    "train-images-idx3-ubyte": 0x0803,
    "train-labels-idx1-ubyte": 0x0801,
    "t10k-images-idx3-ubyte": 0x0803,
    "t10k-labels-idx1-ubyte": 0x0801,
}


def raw_folder(cfg: DataConfig) -> Path:
    return Path(cfg.root) / FOLDERS[cfg.dataset] / "raw"


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


def data_problem(cfg: DataConfig) -> str | None:
    """Why `cfg`'s raw files cannot be read, or None (also None with `download`: the files may
    yet come from the network). Each file must exist, be readable, start with its IDX magic
    number, hold the full size its header states, and each split hold as many labels as
    images."""
    if cfg.download:
        return None
    folder = raw_folder(cfg)
    missing, unreadable, counts = [], [], {}
    for name, magic in RAW_FILES.items():
        path = folder / name
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
            f"{cfg.dataset} not found: looked in {folder.resolve()} for {', '.join(RAW_FILES)}; "
            f"missing {', '.join(missing)}. Point data.root at a folder holding "
            f"{FOLDERS[cfg.dataset]}/raw/ (e.g. --set data.root=../shared/data), or set "
            "data.download=true where the network allows it."
        )
    if unreadable:
        return f"{cfg.dataset}: cannot read {', '.join(unreadable)} in {folder.resolve()}"
    return None
