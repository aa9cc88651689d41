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
    """``(image (3, size, size) float in [0, 1], {"boxes": (N, 4), "labels": (N,)})`` per sample,
    boxes in the resized (and, with ``train=True``, augmented) image's pixels.
    ``transform_options`` go to :func:`detection_transform` (``hue=0``, ``scale=...``)."""

    def __init__(self, samples: Sequence[DetectionSample], size: int, train: bool = False, **transform_options):
        self.samples = list(samples)
        self.size, self.train = size, train
        self.transform = detection_transform(size, train, **transform_options)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        if self.train:  # albumentations keeps its own generator: draw its seed from torch's
            self.transform.set_random_seed(int(torch.randint(2 ** 31 - 1, ())))
        out = self.transform(image=np.ascontiguousarray(sample.load()),
                             bboxes=np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4),
                             labels=np.asarray(sample.labels, dtype=np.int64).reshape(-1))
        image = torch.from_numpy(out["image"]).permute(2, 0, 1).float().div(255)
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32)).reshape(-1, 4)
        labels = torch.as_tensor(np.asarray(out["labels"]), dtype=torch.int64).reshape(-1)
        return image, {"boxes": boxes, "labels": labels}


def collate(batch: list) -> tuple[torch.Tensor, list[dict]]:
    """Stack the images; keep the targets as a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
