"""Hard-hat data: the Kaggle PASCAL VOC layout, and built-in procedural scenes.

The Kaggle set (andrewmvd/hard-hat-detection) is::

    annotations/hard_hat_workers0.xml ...     one VOC XML per image
    images/hard_hat_workers0.png ...          (the shared subset has .jpg)

with classes ``helmet`` (a head with a hard hat), ``head`` (without) and ``person``; the
course dropped ``person`` for its incomplete labels, so the default classes are
``helmet, head``. Objects of the other known classes are skipped and counted; an object of a
class this data set does not have is an error naming the file.

:func:`find_data` and :func:`read_data` give every command its data (``--data-dir``,
``$DLS_DATA/hardhat``, else the built-in scenes); :func:`to_tensor` is the one resize both
backends' inference applies to an image.
"""
from __future__ import annotations

import argparse
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import draw

from core.data import IMAGE_EXTENSIONS, DataError, DataSource, require_dir, resolve_data_root
from core.detection.data import DetectionSample
from core.errors import UserError

CLASSES = ("helmet", "head")
KNOWN_CLASSES = ("helmet", "head", "person")
BUILTIN = "built-in procedural helmet/head scenes"


@dataclass
class DetectionData:
    """Samples of one data set, the class names, and what loading it skipped or changed."""

    samples: list[DetectionSample]
    class_names: tuple[str, ...]
    description: str
    counts: Counter

    def subset(self, indices) -> "DetectionData":
        return DetectionData([self.samples[i] for i in indices], self.class_names, self.description, self.counts)

    def __len__(self) -> int:
        return len(self.samples)

    def report(self) -> str:
        """One line: images, boxes per class, and every skipped or clipped item."""
        boxes = Counter()
        for sample in self.samples:
            boxes.update(self.class_names[int(i)] for i in sample.labels)
        parts = [f"{len(self.samples)} images", ", ".join(f"{boxes[c]} {c}" for c in self.class_names)]
        parts += [f"{n} {what}" for what, n in sorted(self.counts.items()) if n]
        return "; ".join(parts)


def classes_option(text: str) -> str:
    """The ``--classes`` type: ``"Helmet, head"`` -> ``"helmet,head"``; distinct names of
    classes the data set has, else an argparse error."""
    names = [name.strip().lower() for name in str(text).split(",") if name.strip()]
    if not names or any(n not in KNOWN_CLASSES for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct names among {', '.join(KNOWN_CLASSES)}, got {text!r}")
    return ",".join(names)


def _number(node: ET.Element, tag: str, xml_path: Path) -> float:
    found = node.find(tag)
    try:
        return float(found.text)
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{xml_path}: <{tag}> missing or not a number") from None


def _find_image(xml_path: Path, filename: str | None, images_dir: Path) -> Path:
    if filename:
        path = images_dir / Path(filename).name
        if path.is_file():
            return path
    for ext in IMAGE_EXTENSIONS:  # Kaggle's XML filenames say .png for every image
        path = images_dir / (xml_path.stem + ext)
        if path.is_file():
            return path
    raise DataError(f"{xml_path}: its image {images_dir / (filename or xml_path.stem)} not found")


def _image_size(root: ET.Element, image_path: Path, xml_path: Path) -> tuple[int, int]:
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        return int(_number(size, "width", xml_path)), int(_number(size, "height", xml_path))
    try:
        with Image.open(image_path) as img:
            return img.size
    except Exception as exc:
        raise DataError(f"{image_path}: cannot read image ({type(exc).__name__})") from None


def parse_voc(xml_path: str | os.PathLike, images_dir: str | os.PathLike,
              class_names: tuple[str, ...] = CLASSES, counts: Counter | None = None) -> DetectionSample:
    """One VOC annotation as a :class:`DetectionSample` (image read later, by path).

    Boxes are VOC's 1-based inclusive pixel corners, used as ``x1, y1, x2, y2``; a box
    reaching outside the image is clipped to it, a box with no area left is dropped, a
    ``difficult`` object is left out (VOC's evaluation ignores them); each is counted in
    ``counts``, as are objects of known classes not in ``class_names``.
    """
    xml_path, counts = Path(xml_path), counts if counts is not None else Counter()
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{xml_path}: not valid XML ({exc})") from None
    image_path = _find_image(xml_path, root.findtext("filename"), Path(images_dir))
    width, height = _image_size(root, image_path, xml_path)
    boxes, labels = [], []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        if name not in KNOWN_CLASSES:
            raise DataError(f"{xml_path}: unknown class '{name}' (this data set has {', '.join(KNOWN_CLASSES)})")
        if name not in class_names:
            counts[f"{name} boxes skipped (class not selected)"] += 1
            continue
        if (obj.findtext("difficult") or "0").strip() == "1":
            counts["difficult boxes left out"] += 1
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"{xml_path}: object '{name}' has no <bndbox>")
        box = [_number(bndbox, tag, xml_path) for tag in ("xmin", "ymin", "xmax", "ymax")]
        clipped = [min(max(box[0], 0), width), min(max(box[1], 0), height),
                   min(max(box[2], 0), width), min(max(box[3], 0), height)]
        if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
            counts["boxes with no area inside the image dropped"] += 1
            continue
        if clipped != box:
            counts["boxes clipped to the image"] += 1
        boxes.append(clipped)
        labels.append(class_names.index(name))
    if not boxes:
        counts["images without objects"] += 1
    return DetectionSample(image_path, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                           name=image_path.stem)


def load_voc(root: str | os.PathLike, class_names: tuple[str, ...] = CLASSES) -> DetectionData:
    """Every ``annotations/*.xml`` under ``root`` with its image from ``images/``."""
    root = Path(root)
    annotations = require_dir(root / "annotations", "annotations folder (VOC layout: annotations/*.xml)")
    images_dir = require_dir(root / "images", "images folder (VOC layout: images/*)")
    xml_files = sorted(annotations.glob("*.xml"), key=_natural_key)
    if not xml_files:
        raise DataError(f"{annotations}: no .xml annotation files")
    counts: Counter = Counter()
    samples = [parse_voc(path, images_dir, class_names, counts) for path in xml_files]
    return DetectionData(samples, class_names, f"hard-hat VOC images from {root}", counts)


def _natural_key(path: Path):
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return (path.stem.rstrip("0123456789"), int(digits) if digits else -1, path.stem)


def find_data(data_dir: str | os.PathLike | None) -> DataSource:
    """Where the data comes from: ``data_dir``, else ``$DLS_DATA/hardhat``, else the built-in
    scenes (:func:`core.data.resolve_data_root`, which prints the choice).

    Raises:
        DataError: ``data_dir`` given but not a folder.
    """
    return resolve_data_root("hardhat", data_dir, builtin=BUILTIN)


def read_data(source: DataSource, class_names: tuple[str, ...], n_images: int, size: int,
              seed: int = 0) -> DetectionData:
    """The images of ``source``: its VOC folder with ``class_names``, or ``n_images`` built-in
    scenes of ``size`` px drawn from ``seed``.

    Raises:
        UserError: built-in scenes asked for other classes than :data:`CLASSES`.
        DataError: a VOC folder that cannot be read (see :func:`load_voc`).
    """
    if source.builtin:
        if tuple(class_names) != CLASSES:
            raise UserError(f"classes {','.join(class_names)}: the built-in scenes have {','.join(CLASSES)} only")
        return make_scenes(n_images, size, seed)
    return load_voc(source.root, tuple(class_names))


def to_tensor(array: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 array (H, W, 3) as a float image (3, size, size) in [0, 1] (bilinear,
    antialiased): the input both backends' detectors see."""
    image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float().div(255)
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def split_indices(n: int, val_fraction: float = 0.15, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded shuffle of ``range(n)`` cut into train and validation (at least one each)."""
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


# -- built-in procedural scenes -------------------------------------------------------------
SKIN = ((224, 172, 105), (198, 134, 66), (141, 85, 36), (241, 194, 125), (255, 219, 172))
HELMET = ((250, 210, 20), (245, 245, 240), (240, 120, 20), (30, 90, 200), (210, 30, 30))


def _draw_worker(image: np.ndarray, rng: np.random.Generator, cx: float, top: float, r: float,
                 helmet: bool) -> list[float]:
    """A body (shirt or vest), a head of radius ``r`` and maybe a helmet; returns the box:
    the head (``head``) or head and helmet together (``helmet``), as in the real labels."""
    height, width = image.shape[:2]
    body = rng.integers(30, 220, 3)
    rr, cc = draw.rectangle((top + 1.8 * r, cx - 1.6 * r), (top + 7 * r, cx + 1.6 * r), shape=image.shape[:2])
    image[rr, cc] = body
    cy = top + r
    rr, cc = draw.ellipse(cy, cx, r, 0.85 * r, shape=image.shape[:2])
    image[rr, cc] = SKIN[rng.integers(len(SKIN))]
    rr, cc = draw.disk((cy - 0.1 * r, cx - 0.35 * r), 0.12 * r + 0.5, shape=image.shape[:2])  # eyes
    image[rr, cc] = 40
    rr, cc = draw.disk((cy - 0.1 * r, cx + 0.35 * r), 0.12 * r + 0.5, shape=image.shape[:2])
    image[rr, cc] = 40
    x1, y1, x2, y2 = cx - 0.85 * r, top, cx + 0.85 * r, top + 2 * r
    if helmet:
        rr, cc = draw.ellipse(cy - 0.35 * r, cx, 0.9 * r, 1.15 * r, shape=image.shape[:2])
        keep = rr <= cy - 0.1 * r
        image[rr[keep], cc[keep]] = HELMET[rng.integers(len(HELMET))]
        x1, y1, x2 = cx - 1.15 * r, cy - 1.25 * r, cx + 1.15 * r
    return [max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)]


def _covered(cover, box) -> float:
    """Share of ``box``'s area inside ``cover`` (both ``x1, y1, x2, y2``)."""
    w = max(0.0, min(cover[2], box[2]) - max(cover[0], box[0]))
    h = max(0.0, min(cover[3], box[3]) - max(cover[1], box[1]))
    return w * h / max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)


def make_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: a noisy gradient background, clutter rectangles and 1-6 workers of varied size
    (heads of radius 5-9 % of the side), overlapping but no head more than 30 % hidden, about
    60 % with a helmet."""
    ramp = np.linspace(0, 1, size)[:, None, None]
    image = (rng.uniform(60, 200, 3) * (1 - ramp) + rng.uniform(60, 200, 3) * ramp).repeat(size, axis=1)
    image = image + rng.normal(0, 8, image.shape)
    for _ in range(rng.integers(2, 6)):
        y, x = rng.integers(0, size, 2)
        rr, cc = draw.rectangle((y, x), (y + rng.integers(10, size // 3), x + rng.integers(10, size // 3)),
                                shape=(size, size))
        image[rr, cc] = rng.integers(0, 255, 3)
    figures = []
    for _ in range(int(rng.integers(1, 7))):
        r = rng.uniform(0.05, 0.09) * size
        figures.append((rng.uniform(r, size - r), rng.uniform(0.05 * size, size - 3 * r), r))
    boxes, labels = [], []
    for cx, top, r in sorted(figures, key=lambda f: f[1]):  # back to front: lower figures are nearer
        figure = np.array([cx - 1.6 * r, top, cx + 1.6 * r, top + 7 * r])
        if any(_covered(figure, box) > 0.3 for box in boxes):
            continue  # it would hide more than 30 % of a head already drawn
        helmet = bool(rng.random() < 0.6)
        boxes.append(_draw_worker(image, rng, cx, top, r, helmet))
        labels.append(0 if helmet else 1)
    return np.clip(image, 0, 255).astype(np.uint8), np.array(boxes, np.float32), np.array(labels, np.int64)


def make_scenes(n: int, size: int = 256, seed: int = 0) -> DetectionData:
    """``n`` procedural scenes (``size`` x ``size``) with ``helmet`` / ``head`` boxes."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        image, boxes, labels = make_scene(rng, size)
        samples.append(DetectionSample(image, boxes, labels, name=f"scene{i}"))
    return DetectionData(samples, CLASSES, f"{n} built-in procedural scenes ({size} px, figures with and "
                                           "without helmets)", Counter())
