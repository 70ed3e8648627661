"""CelebA (Liu et al. 2015), aligned and cropped, in torchvision's layout: `<root>/celeba/
img_align_celeba/<id>.jpg` (178×218 RGB) and `<root>/celeba/list_eval_partition.txt` (`<id>.jpg
<0|1|2>`: train, validation, test). The train split is partitions 0 and 1 (vaestudy carves its
own validation split from it); the test split is partition 2. Each image is cropped to its
central 148×148 square (the usual VAE preprocessing); set `data.image_size: 64` to resize it.
Unlabelled. The check reads the partition file and every listed image's header and checksums."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part
from vaestudy.training.datasets.folder import read_images, uniform_problem

FOLDER = "celeba"
CROP = 148


class CelebA(Dataset):
    layout = f"{FOLDER}/img_align_celeba/*.jpg and {FOLDER}/list_eval_partition.txt"

    def shape(self) -> tuple[int, int, int]:
        return (3, CROP, CROP)

    def _partition(self) -> dict[str, str]:
        """Image file -> its partition ("0", "1" or "2"); ValueError says what is wrong."""
        path = self.root / FOLDER / "list_eval_partition.txt"
        try:
            rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise ValueError(f"{path}: cannot read it ({exc.strerror})") from None
        if not rows or any(len(r) != 2 or r[1] not in ("0", "1", "2") for r in rows):
            raise ValueError(f"{path}: expected lines '<image>.jpg <0|1|2>'")
        return dict(rows)

    def _files(self, part: Part) -> list[Path]:
        wanted = ("2",) if part == "test" else ("0", "1")
        folder = self.root / FOLDER / "img_align_celeba"
        return [folder / name for name, p in sorted(self._partition().items()) if p in wanted]

    def problem(self) -> str | None:
        try:
            files = self._files("train") + self._files("test")
        except ValueError as exc:
            return f"celeba: {exc}; expected {self.layout} (torchvision's layout)"
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            return (
                f"celeba: {len(missing)} images listed in list_eval_partition.txt are missing "
                f"from {files[0].parent.resolve()} (e.g. {', '.join(missing[:3])})"
            )
        return uniform_problem("celeba", files)

    def read(self, part: Part) -> tuple[Any, None]:
        images = read_images(self._files(part))
        _, _, h, w = images.shape
        top, left = (h - CROP) // 2, (w - CROP) // 2
        return images[:, :, top : top + CROP, left : left + CROP].copy(), None
