"""Images in class folders, torchvision's `ImageFolder` layout, one per split:
`<root>/train/<class>/<image>` and `<root>/test/<class>/<image>` (PNG, JPEG, ... any format
Pillow reads), every image the same size; labels are the class folders in sorted order.
Greyscale images are read as one channel, every other mode (palette, RGBA, CMYK) as RGB. The
check lists the folders and reads every image's header (size and mode) and checksums.
`read_images` and `uniform_problem` serve every dataset stored as image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaestudy.training.datasets.base import Dataset, Part

GREY = {"1", "L", "LA", "I", "I;16", "F"}  # Pillow modes read as one channel; the rest as RGB
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def _mode(mode: str) -> str:
    return "L" if mode in GREY else "RGB"


def uniform_problem(name: str, files: Sequence[Path]) -> str | None:
    """Why the image `files` cannot be read as one array (an unreadable or damaged file,
    several sizes or channel counts), or None. Reads headers and, where the format has them,
    checksums (`Image.verify`: a PNG cut short is caught) or end markers (a JPEG's), not
    pixels."""
    from PIL import Image, UnidentifiedImageError

    sizes: set[tuple[Any, ...]] = set()
    for path in files:
        try:
            with Image.open(path) as image:
                sizes.add((image.size, _mode(image.mode)))
                image.verify()
                jpeg = image.format == "JPEG"
            if jpeg and not _ends_like_a_jpeg(path):
                return f"{name}: {path}: the JPEG is cut short (no end marker); copy it again"
        except (OSError, SyntaxError, UnidentifiedImageError) as exc:
            return f"{name}: {path}: not a readable image ({exc})"
    if len(sizes) > 1:
        found = sorted(sizes)
        return f"{name}: images of several sizes and channel counts {found}; resize them to one"
    return None


def _ends_like_a_jpeg(path: Path) -> bool:
    """Whether the file ends with JPEG's end-of-image marker (FF D9), trailing zeros aside."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 64))
        return f.read().rstrip(b"\x00").endswith(b"\xff\xd9")


def read_images(files: Sequence[Path]) -> Any:
    """The images as one uint8 array [N, C, H, W] (C = 1 for greyscale, else 3)."""
    import numpy as np
    from PIL import Image

    arrays = []
    for path in files:
        with Image.open(path) as image:
            a = np.asarray(image.convert(_mode(image.mode)))
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(arrays)


class ImageFolder(Dataset):
    layout = "train/<class>/<image> and test/<class>/<image>, every image the same size"

    def _images(self, part: Part) -> dict[str, list[Path]]:
        folder = self.root / part
        return {
            c.name: sorted(p for p in c.iterdir() if p.suffix.lower() in EXTENSIONS)
            for c in sorted(folder.iterdir())
            if c.is_dir()
        }

    def shape(self) -> tuple[int, int, int] | None:
        """The first training image's (all share it: `problem`)."""
        from PIL import Image

        first = next((f[0] for f in self._images("train").values() if f), None)
        if first is None:
            return None
        with Image.open(first) as image:
            width, height = image.size
            return (1 if _mode(image.mode) == "L" else 3, height, width)

    def problem(self) -> str | None:
        classes: dict[str, list[str]] = {}
        files: list[Path] = []
        for part in ("train", "test"):
            folder = self.root / part
            if not folder.is_dir():
                return f"image_folder: {folder.resolve()} not found: expected {self.layout}"
            found = self._images(part)  # type: ignore[arg-type]
            empty = [c for c, images in found.items() if not images]
            if not found or empty:
                return (
                    f"image_folder: {folder.resolve()}: no images in "
                    f"{', '.join(empty) or 'any class folder'}; expected {self.layout}"
                )
            classes[part] = list(found)
            files += [path for images in found.values() for path in images]
        if classes["train"] != classes["test"]:
            return (
                f"image_folder: {self.root}: train has classes {classes['train']}, test "
                f"{classes['test']}: they must match"
            )
        return uniform_problem("image_folder", files)

    def read(self, part: Part) -> tuple[Any, Any]:
        import torch

        found = self._images(part)
        labels = [label for label, images in enumerate(found.values()) for _ in images]
        files = [path for images in found.values() for path in images]
        return torch.from_numpy(read_images(files)), torch.tensor(labels)
