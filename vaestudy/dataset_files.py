"""Where each dataset's raw files live and whether they can be read: torchvision's raw layout,
`<root>/<MNIST|FashionMNIST>/raw/<IDX files>`. Standard library only, so that the preflight
checks (`vaestudy.preflight`) look for the data of every trial before anything starts."""

from __future__ import annotations

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


def data_problem(cfg: DataConfig) -> str | None:
    """Why `cfg`'s raw files cannot be read, or None (also None with `download`: the files may
    yet come from the network). Each file must exist, be readable and start with its IDX magic
    number."""
    if cfg.download:
        return None
    folder = raw_folder(cfg)
    missing, unreadable = [], []
    for name, magic in RAW_FILES.items():
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        try:
            with path.open("rb") as f:
                head = f.read(4)
        except OSError as exc:
            unreadable.append(f"{name} ({exc.strerror})")
            continue
        if int.from_bytes(head, "big") != magic:
            unreadable.append(f"{name} (not an IDX file: expected magic {magic:#010x})")
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
