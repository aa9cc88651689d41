"""What every detector reads: a sample (an image and its boxes), the dataset that resizes and
augments samples (:mod:`core.detection.augment`), and the collate function for its batches."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from core.data import load_image_array

from .augment import detection_transform


@dataclass
class DetectionSample:
    """One image and its boxes.

    Attributes:
        image: a file path (read when needed) or an RGB ``uint8`` array (H, W, 3).
        boxes: (N, 4) float ``x1, y1, x2, y2`` in the image's pixels.
        labels: (N,) class indices.
        name: shown in figures and reports.
    """

    image: str | os.PathLike | np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    name: str = ""
    extra: dict = field(default_factory=dict)

    def load(self) -> np.ndarray:
        return self.image if isinstance(self.image, np.ndarray) else load_image_array(self.image)


class DetectionDataset(Dataset):
    """``(image (3, side, side) float in [0, 1], {"boxes": (N, 4), "labels": (N,)})`` per sample,
    boxes in the resized (and, with ``train=True``, augmented) image's pixels.
    ``transform_options`` go to :func:`detection_transform` (``hue=0``, ``scale=...``).

    Two options act on training samples only (``side`` is ``crop`` if given, else ``size``):

    - ``crop``: a random ``crop x crop`` window of the augmented ``size x size`` image, so that
      training costs what ``crop`` px costs while objects keep the scale they have at ``size``
      (a fully convolutional detector then runs on whole ``size`` px images);
    - ``mosaic``: the probability that a sample is a mosaic (as YOLOv4's, Bochkovskiy et al.
      2020): the ``side x side`` square cut at a random centre point (in its middle half) into
      four tiles, each a random window of a different augmented image (the sample's and three
      drawn at random), so that one sample shows objects of four images in new contexts.

    Boxes cut by a window are clipped to it; those left narrower or lower than 2 px are dropped
    with their labels. Every random draw comes from torch's generator.
    """

    def __init__(self, samples: Sequence[DetectionSample], size: int, train: bool = False, crop: int | None = None,
                 mosaic: float = 0.0, **transform_options):
        if crop is not None and not 0 < crop <= size:
            raise ValueError(f"crop must be between 1 and size ({size}), got {crop}")
        if not 0.0 <= mosaic <= 1.0:
            raise ValueError(f"mosaic must be a probability, got {mosaic}")
        self.samples = list(samples)
        self.size, self.train, self.crop, self.mosaic = size, train, crop, mosaic
        self.transform = detection_transform(size, train, **transform_options)

    def __len__(self) -> int:
        return len(self.samples)

    def _transformed(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sample = self.samples[index]
        if self.train:  # albumentations keeps its own generator: draw its seed from torch's
            self.transform.set_random_seed(int(torch.randint(2 ** 31 - 1, ())))
        out = self.transform(image=np.ascontiguousarray(sample.load()),
                             bboxes=np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4),
                             labels=np.asarray(sample.labels, dtype=np.int64).reshape(-1))
        return (out["image"], np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4),
                np.asarray(out["labels"], dtype=np.int64).reshape(-1))

    def __getitem__(self, index: int):
        image, boxes, labels = self._transformed(index)
        if self.train:
            side = self.crop or self.size
            if self.mosaic and float(torch.rand(())) < self.mosaic:
                others = torch.randint(len(self.samples), (3,)).tolist()
                image, boxes, labels = self._mosaic([(image, boxes, labels)] +
                                                    [self._transformed(i) for i in others], side)
            elif side < self.size:
                image, boxes, labels = self._tile(image, boxes, labels, side, side)
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
        return image, {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}

    def _tile(self, image, boxes, labels, width: int, height: int):
        """A random ``width x height`` window of ``image`` and its boxes, clipped to it."""
        x0 = int(torch.randint(image.shape[1] - width + 1, ()))
        y0 = int(torch.randint(image.shape[0] - height + 1, ()))
        return window(image, boxes, labels, x0, y0, width, height)

    def _mosaic(self, parts: list, side: int):
        cx, cy = (int(side * (0.25 + 0.5 * float(torch.rand(())))) for _ in range(2))
        canvas = np.zeros((side, side, 3), dtype=parts[0][0].dtype)
        all_boxes, all_labels = [], []
        for (image, boxes, labels), (x0, y0, x1, y1) in zip(parts, ((0, 0, cx, cy), (cx, 0, side, cy),
                                                                     (0, cy, cx, side), (cx, cy, side, side))):
            if x1 <= x0 or y1 <= y0:
                continue
            tile, tile_boxes, tile_labels = self._tile(image, boxes, labels, x1 - x0, y1 - y0)
            canvas[y0:y1, x0:x1] = tile
            all_boxes.append(tile_boxes + np.array([x0, y0, x0, y0], dtype=np.float32))
            all_labels.append(tile_labels)
        return canvas, np.concatenate(all_boxes), np.concatenate(all_labels)


def window(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, x0: int, y0: int, width: int, height: int,
           min_side: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``width x height`` window of ``image`` at ``(x0, y0)``, with ``boxes`` (N, 4 ``x1 y1 x2
    y2``) moved into it and clipped; boxes left narrower or lower than ``min_side`` px are
    dropped with their ``labels``."""
    moved = (boxes.reshape(-1, 4) - np.array([x0, y0, x0, y0], dtype=np.float32)).clip(
        0, np.array([width, height, width, height], dtype=np.float32))
    keep = ((moved[:, 2] - moved[:, 0]) >= min_side) & ((moved[:, 3] - moved[:, 1]) >= min_side)
    return image[y0:y0 + height, x0:x0 + width], moved[keep].astype(np.float32), labels.reshape(-1)[keep]


def collate(batch: list) -> tuple[torch.Tensor, list[dict]]:
    """Stack the images; keep the targets as a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
