"""Face images for the GAN: any folder of images, or a small built-in set.

The course reads ``faces_dataset_small/`` with ``torchvision.datasets.ImageFolder`` (one
sub-folder, ``faces/``) and the transforms ``Resize(S)``, ``CenterCrop(S)``, ``ToTensor``,
``Normalize((0.5,) * 3, (0.5,) * 3)``. :func:`load_faces` does the same to every image under
a folder (flat, or an ImageFolder root with any number of sub-folders) and keeps the whole
set in memory as one tensor in [-1, 1]: 3143 images of 64x64 are 150 MB, and reading PNGs
once instead of every epoch matters on a CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.data import IMAGE_EXTENSIONS, DataError, require_dir, to_rgb
from core.console import echo


@dataclass
class Faces:
    """Images (N, 3, S, S) in [-1, 1], their names and a one-line description."""

    images: torch.Tensor
    names: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "Faces":
        index = list(index)
        return Faces(self.images[index], [self.names[i] for i in index], f"{len(index)} of {self.description}")


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """The course's ``denorm``: [-1, 1] -> [0, 1]."""
    return images * 0.5 + 0.5


def prepare_image(img: Image.Image, size: int) -> torch.Tensor:
    """``Resize(size)`` (shorter side, antialiased), ``CenterCrop(size)``, [-1, 1]; RGB in, (3, S, S) out."""
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).clamp(-1, 1)


def find_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root``: directly in it (a flat folder) and in its sub-folders
    (an ImageFolder root), sorted. An empty folder is an error naming it."""
    root = require_dir(root, "image folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it or its sub-folders")
    return files


def load_faces(root: str | os.PathLike, size: int) -> Faces:
    """Every image under ``root`` as a :class:`Faces` set at ``size`` x ``size``.

    Greyscale, palette and RGBA images are converted to RGB (:func:`core.data.to_rgb`:
    transparency composited on white; counted and printed); files that
    cannot be read are skipped, named and counted; if none can be read, :class:`DataError`.
    """
    root = Path(root)
    files = find_images(root)
    images, names, converted, broken = [], [], [], []
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                if img.mode != "RGB":
                    converted.append(f"{path.name} ({img.mode})")
                images.append(prepare_image(to_rgb(img), size))
        except Exception as exc:  # PIL raises several types for broken files
            broken.append(f"{path} ({type(exc).__name__}: {exc})")
            continue
        names.append(str(path.relative_to(root)))
    if converted:
        echo(f"converted {len(converted)} non-RGB image(s) to RGB: {_first(converted)}")
    if broken:
        echo(f"skipped {len(broken)} unreadable file(s): {_first(broken)}")
    if not images:
        raise DataError(f"{root}: none of its {len(files)} image file(s) could be read; first: {broken[0]}")
    return Faces(torch.stack(images), names, f"{len(images)} images from {root} at {size}x{size}")


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def builtin_faces(size: int) -> Faces:
    """scikit-image's bundled ``lfw_subset`` faces (the first 100 of its 200 grey 25x25 crops;
    the rest are non-faces), as RGB at ``size`` x ``size``: no download."""
    from skimage.data import lfw_subset

    crops = lfw_subset()[:100]
    images = [prepare_image(Image.fromarray((c * 255).astype(np.uint8)).convert("RGB"), size) for c in crops]
    names = [f"lfw_subset_{i:03d}" for i in range(len(images))]
    return Faces(torch.stack(images), names, f"100 built-in grey LFW faces (scikit-image lfw_subset) at {size}x{size}")


def split_holdout(n: int, holdout: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, held out): ``holdout`` images drawn at random (seeded), never trained on,
    so that ``evaluate`` compares the samples with faces the model never saw."""
    if holdout < 0 or holdout >= n:
        raise ValueError(f"--holdout {holdout}: must be from 0 to {n - 1} (the data has {n} images)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[holdout:]), sorted(order[:holdout])


def two_mode_points(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    """A tiny two-mode image set for tests: half the images dark with a bright left half,
    half bright with a dark top half, plus a little noise; (n, 3, size, size) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), -0.6)
    half = size // 2
    images[: n // 2, :, :, :half] = 0.6
    images[n // 2:] = 0.6
    images[n // 2:, :, :half, :] = -0.6
    return (images + 0.05 * torch.randn(images.shape, generator=g)).clamp(-1, 1)
