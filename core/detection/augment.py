"""Box-aware augmentation (albumentations, as the other homeworks) and the dataset every detector reads.

The training pipeline follows MMDetection's CenterNet recipe in spirit (random centre crop
and scale, flip, photometric distortion), with albumentations' box-aware transforms so that
boxes move with the pixels:

1. resize to ``size x size`` (area interpolation when shrinking);
2. random scale (0.6-1.4) about the centre and shift (up to 15 % of the side): a random crop
   or zoom-out (``A.Affine``);
3. horizontal flip with probability 0.5;
4. brightness / contrast / saturation / hue jitter (``A.ColorJitter``, torchvision's factors);
5. boxes clipped to the image; boxes left narrower or lower than 2 px (cut off by the crop)
   dropped with their labels.

The random draws are seeded from torch's generator for every sample, so ``torch.manual_seed``
makes a run repeatable and each DataLoader worker draws its own augmentations.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from core.data import load_image_array


def detection_transform(size: int, train: bool, scale: tuple[float, float] = (0.6, 1.4),
                        shift: float = 0.15, flip: float = 0.5, colour: float = 0.3, hue: float = 0.02) -> A.Compose:
    """The transform ``(image=uint8 (H, W, 3), bboxes=(N, 4) x1 y1 x2 y2, labels=(N,)) -> same at
    size x size``: resize only, or the training augmentation above (``hue=0`` skips the HSV
    round trip, the costliest step on a CPU)."""
    steps: list = [A.Resize(size, size, interpolation=cv2.INTER_AREA)]
    if train:
        steps += [A.Affine(scale=scale, translate_percent=(-shift, shift), keep_ratio=True, interpolation=cv2.INTER_LINEAR,
                           border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
                  A.HorizontalFlip(p=flip),
                  A.ColorJitter(brightness=colour, contrast=colour, saturation=colour, hue=hue, p=1.0)]
    boxes = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_width=2, min_height=2, clip=True)
    return A.Compose(steps, bbox_params=boxes)


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
