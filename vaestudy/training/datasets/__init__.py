"""Datasets, each read from disk in its published layout: a `Dataset` class per layout
(`base.py`), found by the name `data.dataset` gives (`dataset_class`): a built-in's, or a user's
own `Dataset` subclass by entry point (group `vaestudy.datasets`) or import path
(`mypkg.data:Shapes`). Nothing here imports torch until a dataset is read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaestudy.config.plugins import PluginError, import_path, load
from vaestudy.training.datasets.base import Dataset

if TYPE_CHECKING:
    from vaestudy.config.run import DataConfig

__all__ = ["BUILTIN", "Dataset", "data_problem", "dataset_class"]

BUILTIN = {
    "mnist": "vaestudy.training.datasets.idx:Mnist",
    "fashion_mnist": "vaestudy.training.datasets.idx:FashionMnist",
    "cifar10": "vaestudy.training.datasets.cifar:Cifar10",
    "svhn": "vaestudy.training.datasets.svhn:Svhn",
    "dsprites": "vaestudy.training.datasets.dsprites:DSprites",
    "omniglot": "vaestudy.training.datasets.omniglot:Omniglot",
    "celeba": "vaestudy.training.datasets.celeba:CelebA",
    "image_folder": "vaestudy.training.datasets.folder:ImageFolder",
    "tensors": "vaestudy.training.datasets.tensors:TensorFile",
}


def dataset_class(name: str) -> type[Dataset]:
    """The `Dataset` class `data.dataset: name` reads with."""
    cls = import_path(BUILTIN[name]) if name in BUILTIN else load("datasets", name, list(BUILTIN))
    if not (isinstance(cls, type) and issubclass(cls, Dataset)):
        raise PluginError(f"{name!r}: expected a subclass of vaestudy.training.datasets.Dataset")
    return cls


def data_problem(cfg: DataConfig) -> str | None:
    """Why `cfg`'s dataset cannot be read (its files, or the plugin's own check), or None."""
    try:
        return dataset_class(cfg.dataset)(cfg).check()
    except PluginError as exc:
        return f"data.dataset: {exc}"
    except Exception as exc:  # a plugin's check that fails is a problem with the data too
        return f"{cfg.dataset}: its check failed: {type(exc).__name__}: {exc}"
