"""The plate detector: CenterNet (Zhou et al. 2019, "Objects as Points") from ``core.detection``
(targets, Gaussian focal loss, decoding, the task, box-aware augmentation, mAP) on a light
backbone of this homework's own, sized for a CPU.

Plates are one class of small, wide objects: a photo is squashed to ``size x size`` (384 by
default) and the heat map has stride 8, so a median plate (88 x 27 px in a 640 px photo) spans
about 7 x 2 cells. The backbone is four residual stages down to stride 32, then two
upsampling steps with skip connections back to stride 8 (a small FPN), and CenterNet's three
heads (plate heat map, box size, centre offset).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.detection.data import DetectionDataset, DetectionSample

from .data import Photo
from .models import BasicBlock

DETECTOR_STRIDE = 8


class PlateNet(nn.Module):
    """A small CenterNet for one class: images (B, 3, S, S) in [0, 1], S a multiple of 32 ->
    ``heatmap`` (B, 1, S/8, S/8) logits, ``size`` and ``offset`` (B, 2, S/8, S/8) in map cells.

    ``width`` w: stem w (stride 2), residual stages 1.5w, 3w, 4w, 6w (strides 4 to 32), an FPN
    of 2w channels back to stride 8, and CenterNet's three heads on it. At w = 16 and 384 px
    it costs about 0.3 GMAC per photo, a tenth of CenterNet's ResNet-18 at that size.
    """

    num_classes = 1
    stride = DETECTOR_STRIDE

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        c4, c8, c16, c32, neck = 3 * w // 2, 3 * w, 4 * w, 6 * w, 2 * w
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.down4 = BasicBlock(w, c4, (2, 2))
        self.down8 = BasicBlock(c4, c8, (2, 2))
        self.down16 = BasicBlock(c8, c16, (2, 2))
        self.down32 = BasicBlock(c16, c32, (2, 2))
        self.lateral8, self.lateral16, self.top = nn.Conv2d(c8, neck, 1), nn.Conv2d(c16, neck, 1), nn.Conv2d(c32, neck, 1)
        self.smooth = nn.Sequential(nn.Conv2d(neck, neck, 3, 1, 1, bias=False), nn.BatchNorm2d(neck),
                                    nn.ReLU(inplace=True))
        self.heatmap = self._head(neck, 1, bias=-math.log((1 - 0.1) / 0.1))  # every cell starts at p = 0.1
        self.size = self._head(neck, 2)
        self.offset = self._head(neck, 2)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _head(cin: int, cout: int, bias: float = 0.0) -> nn.Sequential:
        head = nn.Sequential(nn.Conv2d(cin, cin, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1))
        nn.init.constant_(head[-1].bias, bias)
        return head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image height and width must be multiples of 32, got {tuple(images.shape[-2:])}")
        x8 = self.down8(self.down4(self.stem((images - self.mean) / self.std)))
        x16 = self.down16(x8)
        x32 = self.down32(x16)
        p16 = self.lateral16(x16) + F.interpolate(self.top(x32), size=x16.shape[-2:], mode="nearest")
        p8 = self.smooth(self.lateral8(x8) + F.interpolate(p16, size=x8.shape[-2:], mode="nearest"))
        return {"heatmap": self.heatmap(p8), "size": self.size(p8), "offset": self.offset(p8)}


class PlateDetectionDataset(DetectionDataset):
    """``core.detection``'s dataset and augmentation over photos held in memory, squashed once
    to ``size x size`` (the transform's resize is then free), without the hue jitter: its HSV
    round trip is the costliest step of the augmentation on a CPU, and plates come in every
    colour anyway (brightness, contrast and saturation jitter stay)."""

    def __init__(self, photos: Sequence[Photo], size: int, train: bool = False):
        super().__init__(detection_samples(photos, size), size, train, hue=0.0)


def detection_samples(photos: Sequence[Photo], size: int | None = None) -> list[DetectionSample]:
    """Photos as ``core.detection`` samples (one class, label 0), read into memory; with
    ``size``, squashed to ``size x size`` (boxes scaled alike)."""
    samples = []
    for photo in photos:
        image, boxes = photo.load(), photo.boxes.astype(np.float32)
        if size is not None:
            h, w = image.shape[:2]
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            boxes = boxes * np.array([size / w, size / h, size / w, size / h], dtype=np.float32)
        samples.append(DetectionSample(image=image, boxes=boxes, labels=np.zeros(len(boxes), dtype=np.int64),
                                       name=photo.name))
    return samples


@torch.no_grad()
def detect_plates(model: PlateNet, images: Sequence[np.ndarray], size: int, topk: int = 10,
                  batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Plates in RGB photos (H, W, 3) of any size: ``boxes`` (K, 4) in each photo's own pixels,
    ``scores``, ``labels``, best first."""
    from core.detection.centernet import decode

    model.eval()
    results = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        batch = torch.stack([resize_photo(image, size) for image in chunk])
        for image, det in zip(chunk, decode(model(batch), model.stride, topk, (size, size))):
            h, w = image.shape[:2]
            boxes = det["boxes"] * torch.tensor([w / size, h / size, w / size, h / size])
            results.append({"boxes": boxes, "scores": det["scores"], "labels": det["labels"]})
    return results


def resize_photo(image: np.ndarray, size: int) -> torch.Tensor:
    """A photo (H, W, 3) uint8 as the detector's input (3, size, size) in [0, 1] (squashed, as in training)."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1).div_(255)[None]
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def match_plates(true_boxes: np.ndarray, detections: dict, score_threshold: float = 0.3,
                 iou_threshold: float = 0.3) -> list[int | None]:
    """For each true box, the index of the detection read for it, or ``None``: detections
    scoring at least ``score_threshold`` are taken best first, each by the free true box it
    overlaps most if their IoU is at least ``iou_threshold`` (a loose box can still be read).
    Extra detections are left out: photos have unannotated plates in the background."""
    from torchvision.ops import box_iou

    matched: list[int | None] = [None] * len(true_boxes)
    keep = [i for i in detections["scores"].argsort(descending=True).tolist()
            if detections["scores"][i] >= score_threshold]
    if not keep or not len(true_boxes):
        return matched
    iou = box_iou(detections["boxes"][keep].float(), torch.as_tensor(true_boxes, dtype=torch.float32))
    for row, index in enumerate(keep):
        overlaps = iou[row].clone()
        overlaps[[j for j, m in enumerate(matched) if m is not None]] = -1
        best = int(overlaps.argmax())
        if overlaps[best] >= iou_threshold:
            matched[best] = index
    return matched
