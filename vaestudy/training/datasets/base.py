"""The interface of a dataset: check its files, read a split.

A dataset hands the trainer each split whole: images as one array [N, C, H, W] (or [N, H, W]
for one channel) of intensities, uint8 in 0..255 or floats in [0, 1], and labels [N] (integers
0..K−1) or None for unlabelled data; `vaestudy.training.data` puts them on the device once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from vaestudy.config.run import DataConfig

Part = Literal["train", "test"]


class Dataset:
    """One dataset layout. Subclass it for your own data (`data.dataset: mypkg.data:Shapes`):

    - `problem()`: why the files under `data.root` cannot be read (None: they can): present,
      readable, the right shapes, full length. Keep it to the standard library and numpy, and
      quick: `vaestudy run` and `validate` call it for every trial's data before anything
      starts. Name the file and the layout expected (`layout`).
    - `read(part)`: the images and labels of `"train"` or `"test"`; the validation split is
      carved from train by `vaestudy.training.data`.
    - `downloads`: whether `data.download: true` can fetch the files (torchvision's MNIST ones
      only); elsewhere it is refused.
    - `shape()`: one image's (C, H, W) as stored, known without reading the images (None:
      unknown until read); `vaestudy run` checks that every trial's network takes it.
    - `count(part)`: how many images `part` holds, known without reading them (None: unknown),
      and `pixel_bytes()`: bytes per pixel as the trainer keeps them on the device (1 for
      uint8 images, 4 for floats); with `shape()` they size a trial's device memory before a
      GPU study starts (`vaestudy.training.memory`).
    - `config`: the data section's config class, a subclass of `vaestudy.config.run.DataConfig`
      with the dataset's own fields (None: `DataConfig` itself); `self.cfg` is an instance.
    """

    layout: ClassVar[str] = ""  # the files this dataset expects under data.root, for messages
    downloads: ClassVar[bool] = False
    config: ClassVar[type | None] = None

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.root)

    def check(self) -> str | None:
        """`problem()`, after refusing `data.download` where it cannot download."""
        if self.cfg.download and not self.downloads:
            return (
                f"data.download: {self.cfg.dataset} cannot be downloaded by vaestudy; point "
                f"data.root at your copy ({self.layout})"
            )
        return None if self.cfg.download else self.problem()

    def problem(self) -> str | None:
        return None

    def shape(self) -> tuple[int, int, int] | None:
        return None

    def count(self, part: Part) -> int | None:
        return None

    def pixel_bytes(self) -> int:
        return 1

    def image_shape(self) -> tuple[int, int, int] | None:
        """One image's (C, H, W) as the trainer sees it (after `data.image_size`), or None."""
        shape = self.shape()
        size = self.cfg.image_size
        return shape if shape is None or not size else (shape[0], size, size)

    def read(self, part: Part) -> tuple[Any, Any | None]:
        raise NotImplementedError
