"""Box operations on ``(x1, y1, x2, y2)`` pixel boxes (float tensors of shape (N, 4))."""
from __future__ import annotations

import torch
from torchvision.ops import box_convert, box_iou

__all__ = ["box_iou", "clip_boxes", "to_cxcywh", "to_xyxy", "box_areas", "scale_boxes", "remove_small"]


def to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    return box_convert(boxes, "xyxy", "cxcywh")


def to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    return box_convert(boxes, "cxcywh", "xyxy")


def box_areas(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(x1, y1, x2, y2)`` boxes (0 for empty or inverted ones)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def clip_boxes(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, int]:
    """Clip boxes to the image ``[0, width] x [0, height]``; return them and how many changed."""
    clipped = boxes.clone()
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, width)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, height)
    changed = int((clipped != boxes).any(dim=1).sum()) if len(boxes) else 0
    return clipped, changed


def scale_boxes(boxes: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Boxes of an image resized by ``sx`` horizontally and ``sy`` vertically."""
    return boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype, device=boxes.device)


def remove_small(boxes: torch.Tensor, min_size: float = 1.0) -> torch.Tensor:
    """Boolean keep-mask of boxes at least ``min_size`` wide and high."""
    return ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
