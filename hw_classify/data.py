"""Image-classification data: three folder layouts detected from the root, a built-in
generated set, and the augmentation pipelines.

Layouts (:func:`load_layout`):

- ``simpsons`` (Kaggle journey-springfield): ``train/simpsons_dataset/<character>/*.jpg`` and
  ``testset/testset/imgN.jpg``; submission ``Id,Expected`` (the file name, the class name).
- ``cars`` (car-model classification): ``train.csv`` with ``Id,Category``, images in
  ``train/<category>/<file>`` (or ``train/<file>``), ``test/<file>``; submission ``Id,Category``.
- ``image-folder``: ``<root>/<class>/*`` or ``<root>/train/<class>/*`` with an optional
  ``<root>/test/*`` of unlabelled images; submission ``Id,Expected``.

Without data on disk, :func:`make_shapes` draws a built-in set: five classes of coloured
shapes (circle, square, triangle, cross, ring) on textured backgrounds, at random sizes,
positions and colours, so a CNN must learn shape rather than colour.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.data import (IMAGENET_MEAN, IMAGENET_STD, DataError, LabelledImages, csv_label_items, decode_images,
                       image_folder_items, list_images)

AUGMENTS = ("none", "light", "strong")
SHAPES = ("circle", "square", "triangle", "cross", "ring")
#: images are decoded once at LOAD_SCALE x the training size, so random crops have margin
LOAD_SCALE = 1.14


@dataclass
class ClassificationData:
    """A labelled training set, an optional unlabelled test set, and the submission format.

    ``train_images`` / ``test_images`` hold decoded uint8 arrays (a cache) when available.
    """

    layout: str
    train: LabelledImages
    test_files: list[Path] | None
    id_column: str = "Id"
    label_column: str = "Expected"
    description: str = ""
    train_images: list[np.ndarray] | None = None
    test_images: list[np.ndarray] | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def classes(self) -> list[str]:
        return self.train.classes


def detect_layout(root: str | os.PathLike) -> str:
    """``"simpsons"``, ``"cars"`` or ``"image-folder"`` from what ``root`` holds.

    Raises:
        DataError: none of the three layouts matches.
    """
    root = Path(root)
    if (root / "train" / "simpsons_dataset").is_dir():
        return "simpsons"
    if (root / "train.csv").is_file():
        return "cars"
    folder = root / "train" if (root / "train").is_dir() else root
    if any(p.is_dir() for p in folder.iterdir()):
        return "image-folder"
    raise DataError(f"{root}: not a known layout (train/simpsons_dataset/<class>/, train.csv + train/ + test/, "
                    "or <class>/ folders of images)")


def test_folder(root: Path, layout: str) -> Path | None:
    """Where the unlabelled test images of a layout are (``None`` when there are none)."""
    if layout == "simpsons":
        nested = root / "testset" / "testset"
        return nested if nested.is_dir() else root / "testset" if (root / "testset").is_dir() else None
    candidate = root / "test"
    return candidate if candidate.is_dir() else None


def load_layout(root: str | os.PathLike, need_test: bool = False) -> ClassificationData:
    """Read the training labels (and test file names) of the layout under ``root``."""
    root = Path(root)
    layout = detect_layout(root)
    if layout == "simpsons":
        train = image_folder_items(root / "train" / "simpsons_dataset")
        columns = ("Id", "Expected")
    elif layout == "cars":
        train = csv_label_items(root / "train.csv", root / "train", "Id", "Category")
        columns = ("Id", "Category")
    else:
        train = image_folder_items(root / "train" if (root / "train").is_dir() else root)
        columns = ("Id", "Expected")
    folder = test_folder(root, layout)
    if need_test and folder is None:
        raise DataError(f"{root}: no test folder ({'testset/testset' if layout == 'simpsons' else 'test'}/)")
    test_files = list_images(folder) if folder is not None and need_test else None
    counts = ", ".join(f"{k} {v}" for k, v in train.class_counts().items())
    description = f"{layout} layout, {len(train)} labelled images in {len(train.classes)} classes ({counts})"
    if len(train.classes) > 8:
        description = f"{layout} layout, {len(train)} labelled images in {len(train.classes)} classes"
    return ClassificationData(layout, train, test_files, *columns, description=description)


def decode_data(data: ClassificationData, size: int, on_corrupt: str = "skip", cache_limit_mb: int = 3000,
                test: bool = False) -> ClassificationData:
    """Read every training (and with ``test``, test) image once at ``size x size``: unreadable
    files are skipped and listed (or an error with ``on_corrupt="error"``); the arrays are kept
    as a cache when they fit in ``cache_limit_mb``."""
    if data.train_images is not None:
        return data
    n = len(data.train) + (len(data.test_files or []) if test else 0)
    keep = n * size * size * 3 <= cache_limit_mb * 2 ** 20
    arrays, good, skipped = decode_images(data.train.files, size, on_corrupt, keep, desc="reading train images")
    data.train, data.skipped = data.train.subset(good), skipped
    data.train_images = arrays if keep else None
    if test and data.test_files is not None:
        arrays, _, _ = decode_images(data.test_files, size, "error", keep, desc="reading test images")
        data.test_images = arrays if keep else None
    return data


# -- built-in shapes ----------------------------------------------------------------------------
def _draw_shape(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    background = rng.uniform(60, 200, 3)
    noise = rng.normal(0, 18, (size // 8 + 1, size // 8 + 1, 3))
    texture = np.kron(noise, np.ones((8, 8, 1)))[:size, :size]
    image = Image.fromarray(np.clip(background + texture, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r + 2, size - r - 2, 2)
    box = (cx - r, cy - r, cx + r, cy + r)
    width = max(2, int(r / 3))
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        angle = rng.uniform(0, math.pi / 2)
        corners = [(cx + r * math.cos(angle + k * math.pi / 2), cy + r * math.sin(angle + k * math.pi / 2))
                   for k in range(4)]
        draw.polygon(corners, fill=colour)
    elif shape == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
        draw.polygon([(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                      for k in range(3)], fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - r, cy - width / 2, cx + r, cy + width / 2), fill=colour)
        draw.rectangle((cx - width / 2, cy - r, cx + width / 2, cy + r), fill=colour)
    else:  # ring
        draw.ellipse(box, outline=colour, width=width)
    return np.asarray(image)


def make_shapes(n_per_class: int = 60, size: int = 64, seed: int = 0, n_test: int = 40) -> ClassificationData:
    """The built-in set: ``n_per_class`` images of each of :data:`SHAPES` and ``n_test``
    unlabelled test images ``img0.png``... (their true classes cycle through the shapes)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(SHAPES)), n_per_class)
    images = [_draw_shape(rng, SHAPES[k], size) for k in labels]
    files = [Path(SHAPES[k]) / f"shape{i:04d}.png" for i, k in enumerate(labels)]
    test_images = [_draw_shape(rng, SHAPES[i % len(SHAPES)], size) for i in range(n_test)]
    train = LabelledImages(files, labels.astype(np.int64), list(SHAPES))
    return ClassificationData("built-in", train, [Path(f"img{i}.png") for i in range(n_test)],
                              description=f"built-in shapes, {len(labels)} labelled images in {len(SHAPES)} classes "
                                          f"({', '.join(SHAPES)}) at {size}x{size}, {n_test} test images",
                              train_images=images, test_images=test_images)


# -- augmentation -------------------------------------------------------------------------------
def build_transform(size: int, augment: str = "none", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    center_crop: bool = False, seed: int | None = None):
    """A callable uint8 (H, W, 3) array -> normalised float tensor (3, size, size).

    ``none``: resize only (evaluation), or with ``center_crop`` the central ``size x size`` of
    the image decoded at the load size (a test-time view: ``1 / LOAD_SCALE**2`` of the area).
    ``light``: random resized crop (70-100% of the area) and horizontal flip. ``strong``: also
    rotation / shift (Affine), colour jitter without much hue change (a character's colours
    identify it) and coarse dropout (1-3 holes, DeVries & Taylor 2017's cutout). Uses
    albumentations; channels are normalised with ``mean`` and ``std`` (RGB in [0, 1]). The
    random draws of one transform follow ``seed`` (a fresh seed when ``None``): two transforms
    built with the same seed augment a sequence of images alike.
    """
    import albumentations as A

    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    if augment == "none":
        steps = [A.CenterCrop(size, size) if center_crop else A.Resize(size, size)]
    else:
        steps = [A.RandomResizedCrop((size, size), scale=(0.7, 1.0), ratio=(0.8, 1.25)), A.HorizontalFlip()]
    if augment == "strong":
        steps += [A.Affine(rotate=(-15, 15), translate_percent=(-0.05, 0.05), p=0.7),
                  A.ColorJitter(0.3, 0.3, 0.3, 0.02, p=0.8),
                  A.CoarseDropout(num_holes_range=(1, 3), hole_height_range=(0.1, 0.25),
                                  hole_width_range=(0.1, 0.25), p=0.5)]
    pipeline = A.Compose(steps, seed=seed)
    mean_t = torch.tensor(mean).view(3, 1, 1) * 255
    std_t = torch.tensor(std).view(3, 1, 1) * 255

    def transform(image: np.ndarray) -> torch.Tensor:
        out = pipeline(image=image)["image"]
        x = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float()
        return (x - mean_t) / std_t

    return transform


def denormalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Undo :func:`build_transform`'s normalisation: a tensor in [0, 1] for plotting."""
    return (x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)).clamp(0, 1)
