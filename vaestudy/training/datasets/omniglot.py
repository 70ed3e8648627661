"""Omniglot (Lake et al. 2015) in torchvision's layout: `<root>/omniglot-py/images_background/
<alphabet>/<character>/<image>.png` (the train split, 30 alphabets) and `images_evaluation/...`
(the test split, 20 other alphabets), 105×105 binary images. Strokes are read as intensity 1
on a background of 0 (the files store black strokes on white), as in the VAE literature; the
images are unlabelled (the splits hold different alphabets). Set `data.image_size: 28` for the
usual 28×28 version. The check lists the folders and reads every image's header and checksums."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part
from vaestudy.training.datasets.folder import read_images, uniform_problem

FOLDER = "omniglot-py"
SPLITS = {"train": "images_background", "test": "images_evaluation"}


class Omniglot(Dataset):
    layout = f"{FOLDER}/images_background/<alphabet>/<character>/*.png and images_evaluation/..."

    def shape(self) -> tuple[int, int, int]:
        return (1, 105, 105)

    def _files(self, part: Part) -> list[Path]:
        return sorted((self.root / FOLDER / SPLITS[part]).glob("*/*/*.png"))

    def problem(self) -> str | None:
        for part, folder in SPLITS.items():
            path = self.root / FOLDER / folder
            if not path.is_dir() or not self._files(part):  # type: ignore[arg-type]
                return (
                    f"omniglot not found: no images in {path.resolve()}; expected {self.layout} "
                    f"(torchvision's layout). Point data.root at the folder holding {FOLDER}/."
                )
        files = self._files("train") + self._files("test")
        return uniform_problem("omniglot", files)

    def read(self, part: Part) -> tuple[Any, None]:
        images = read_images(self._files(part))
        return 255 - images, None  # strokes 1, background 0
