"""Face images for the GAN: any folder of images, or a small built-in set.

The course reads ``faces_dataset_small/`` with ``torchvision.datasets.ImageFolder`` (one
sub-folder, ``faces/``) and the transforms ``Resize(S)``, ``CenterCrop(S)``, ``ToTensor``,
``Normalize((0.5,) * 3, (0.5,) * 3)``. :func:`load_faces` does the same to every image under
a folder (flat, or an ImageFolder root with any number of sub-folders) and keeps the whole
set in memory as one tensor in [-1, 1]: 3143 images of 64x64 are 150 MB, and reading PNGs
once instead of every epoch matters on a CPU.

Every command reads its faces here: :func:`load_data` (train: the training and held-out
faces, from ``--data-dir``, ``$DLS_DATA/faces/lfw_gan`` or built-in) and :func:`real_faces`
(evaluate: a run's held-out faces from its ``split.json``, or another folder).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.console import echo
from core.data import IMAGE_EXTENSIONS, DataError, DataSource, require_dir, resolve_data_root, to_rgb
from core.errors import UserError

DATASET = "faces/lfw_gan"
SPLIT_FILE = "split.json"


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



BUILTIN = "100 built-in faces (scikit-image lfw_subset)"


def find_source(data_dir: str | None, announce: bool = False) -> DataSource:
    """Where the faces come from: ``data_dir``, ``$DLS_DATA/faces/lfw_gan``, or the built-in set."""
    return resolve_data_root(DATASET, data_dir, builtin=BUILTIN, announce=announce)


def load_data(data_dir: str | None, image_size: int, holdout: int, split_seed: int,
              batch_size: int) -> tuple[Faces, Faces, DataSource]:
    """The training faces and the held-out ones (:func:`split_holdout`; from the built-in set
    at most a fifth is held out), and the data source. Prints what it read.

    Raises:
        UserError: ``holdout`` leaves no training faces.
        DataError: unreadable data, or fewer training faces than ``batch_size``.
    """
    source = find_source(data_dir, announce=True)
    faces = builtin_faces(image_size) if source.builtin else load_faces(source.root, image_size)
    try:
        train_ix, holdout_ix = split_holdout(len(faces), min(holdout, len(faces) // 5) if source.builtin
                                             else holdout, split_seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    train, held = faces.subset(train_ix), faces.subset(holdout_ix)
    echo(f"dataset: {faces.description}; {len(train)} for training, {len(held)} held out (split seed "
         f"{split_seed})")
    if len(train) < batch_size:
        raise DataError(f"{source.root or 'built-in data'}: {len(train)} training images, fewer than "
                        f"--batch-size {batch_size}")
    return train, held, source


def real_faces(run: Path, data_dir: str | None, size: int) -> tuple[Faces, Faces | None]:
    """The real faces to compare a run's samples with, and the run's training faces (``None``
    when the data is another folder): with no ``data_dir``, or the run's own data folder, the
    faces its ``split.json`` held out; else every image of ``data_dir``. Prints which data it is.

    Raises:
        UserError: no such ``data_dir``; no ``split.json`` and no ``data_dir``; images of the
            run's split that are gone.
    """
    split_path = Path(run) / SPLIT_FILE
    split = json.loads(split_path.read_text()) if split_path.is_file() else None
    own = split["data"] if split else None
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir}: folder does not exist")
    if data_dir is None and own is None:
        raise UserError(f"{run}: no {SPLIT_FILE}, so give --data-dir with the real faces")
    same = data_dir is None or (own != "built-in" and Path(data_dir).resolve() == Path(own).resolve())
    if not same:
        faces = load_faces(data_dir, size)
        echo(f"data: all {len(faces)} images of {Path(data_dir).resolve()} (--data-dir)")
        return faces, None
    faces = builtin_faces(size) if own == "built-in" else load_faces(own, size)
    index = {name: i for i, name in enumerate(faces.names)}
    missing = [name for name in split["holdout"] + split["train"] if name not in index]
    if missing:
        raise UserError(f"{own}: {len(missing)} image(s) of the run's {SPLIT_FILE} are gone, e.g. {missing[0]}")
    held = faces.subset(index[name] for name in split["holdout"])
    echo(f"data: the run's {len(held)} held-out faces from {own} (never trained on)")
    return held, faces.subset(index[name] for name in split["train"])
