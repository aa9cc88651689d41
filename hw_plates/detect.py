"""Finding plates with the plate detector (:class:`hw_plates.models.PlateNet`, a CenterNet
trained with ``core.detection``'s targets, loss, task and box-aware augmentation): its dataset,
the squashed input, detection in each photo's own pixels, and matching detections to the true
plates.

A photo is squashed to ``size x size`` (384 by default) and the heat map has stride 8: a plate
of 88 x 27 px in a 640 px photo spans about 7 x 2 cells.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from core.detection.data import DetectionDataset, DetectionSample

from .data import Photo
from .models import PlateNet
from .refine import BoxRefiner, refine_boxes


class PlateDetectionDataset(DetectionDataset):
    """``core.detection``'s dataset and augmentation over photos held in memory, squashed once
    to ``size x size`` (the transform's resize is then free), without the hue jitter: its HSV
    round trip is the costliest step of the augmentation on a CPU, and plates come in every
    colour anyway (brightness, contrast and saturation jitter stay). ``scale``: the range of the
    random zoom (:func:`core.detection.augment.detection_transform`); ``crop`` and ``mosaic``:
    as :class:`core.detection.data.DetectionDataset`'s."""

    def __init__(self, photos: Sequence[Photo], size: int, train: bool = False,
                 scale: tuple[float, float] = (0.6, 1.4), crop: int | None = None, mosaic: float = 0.0):
        super().__init__(detection_samples(photos, size), size, train, crop=crop, mosaic=mosaic, hue=0.0, scale=scale)


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
                  batch_size: int = 8, flip: bool = False, refiner: BoxRefiner | None = None,
                  rounds: int = 2) -> list[dict[str, torch.Tensor]]:
    """Plates in RGB photos (H, W, 3) of any size: ``boxes`` (K, 4) in each photo's own pixels,
    ``scores``, ``labels``, best first; ``flip``: averaged with the mirrored photo
    (:func:`core.detection.centernet.flip_averaged`); ``refiner``: each box then moved onto its
    plate ``rounds`` times (:func:`hw_plates.refine.refine_boxes`), scores unchanged."""
    from core.detection.centernet import decode, flip_averaged

    model.eval()
    results: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        batch = torch.stack([resize_photo(image, size) for image in chunk])
        outputs = flip_averaged(model, batch) if flip else model(batch)
        for image, det in zip(chunk, decode(outputs, model.stride, topk, (size, size))):
            h, w = image.shape[:2]
            boxes = det["boxes"] * torch.tensor([w / size, h / size, w / size, h / size])
            results.append({"boxes": boxes, "scores": det["scores"], "labels": det["labels"]})
    return refined(results, images, refiner, rounds) if refiner is not None else results


def refined(detections: Sequence[dict[str, torch.Tensor]], images: Sequence[np.ndarray], refiner: BoxRefiner,
            rounds: int = 2) -> list[dict[str, torch.Tensor]]:
    """:func:`detect_plates`' ``detections`` of ``images`` with every box moved onto its plate
    ``rounds`` times by ``refiner`` (:func:`hw_plates.refine.refine_boxes`), as new
    dictionaries; scores and labels unchanged."""
    out = []
    for image, det in zip(images, detections):
        boxes = det["boxes"]
        if len(boxes):
            boxes = torch.tensor(refine_boxes(refiner, image, boxes.tolist(), rounds), dtype=boxes.dtype)
        out.append({**det, "boxes": boxes})
    return out


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
