"""Box-aware augmentation (torchvision.transforms.v2) and the dataset every detector reads.

The training pipeline follows MMDetection's CenterNet recipe in spirit (random centre crop
and scale, flip, photometric distortion), with torchvision's box-aware transforms so that
boxes move with the pixels:

1. resize to ``size x size``;
2. random scale (0.6-1.4) and shift (up to 15 % of the side): a random crop or zoom-out;
3. horizontal flip with probability 0.5;
4. brightness / contrast / saturation / hue jitter;
5. boxes clipped to the image; boxes left smaller than 2 px (cut off by the crop) dropped
   with their labels.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from core.data import load_image_array


def detection_transform(size: int, train: bool, scale: tuple[float, float] = (0.6, 1.4),
                        shift: float = 0.15, flip: float = 0.5, colour: float = 0.3) -> v2.Compose:
    """The transform ``(image uint8 (3, H, W), {"boxes", "labels"}) -> (float image in [0, 1]
    (3, size, size), target)``: resize only, or the training augmentation above."""
    steps: list = [v2.Resize((size, size), antialias=True)]
    if train:
        steps += [v2.RandomAffine(degrees=0, translate=(shift, shift), scale=scale, fill=0),
                  v2.RandomHorizontalFlip(flip),
                  v2.ColorJitter(brightness=colour, contrast=colour, saturation=colour, hue=0.02)]
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=2.0),
              v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


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
    boxes in the resized (and, with ``train=True``, augmented) image's pixels."""

    def __init__(self, samples: Sequence[DetectionSample], size: int, train: bool = False):
        self.samples = list(samples)
        self.size = size
        self.transform = detection_transform(size, train)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        array = sample.load()
        image = tv_tensors.Image(torch.from_numpy(np.array(array)).permute(2, 0, 1))
        boxes = tv_tensors.BoundingBoxes(torch.as_tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4),
                                         format="XYXY", canvas_size=tuple(array.shape[:2]))
        labels = torch.as_tensor(sample.labels, dtype=torch.int64).reshape(-1)
        image, target = self.transform(image, {"boxes": boxes, "labels": labels})
        return image.as_subclass(torch.Tensor), {"boxes": target["boxes"].as_subclass(torch.Tensor),
                                                 "labels": target["labels"]}


def collate(batch: list) -> tuple[torch.Tensor, list[dict]]:
    """Stack the images; keep the targets as a list (their box counts differ)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
