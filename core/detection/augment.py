"""Box-aware augmentation (albumentations, as the other homeworks) for every detector.

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

:class:`core.detection.data.DetectionDataset` seeds the random draws from torch's generator
for every sample, so ``torch.manual_seed`` makes a run repeatable and each DataLoader worker
draws its own augmentations.
"""
from __future__ import annotations

import albumentations as A
import cv2


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
