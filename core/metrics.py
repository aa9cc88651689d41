"""Metrics shared by several homeworks.

Segmentation metrics take binary masks (or logits, thresholded here) of shape (N, 1, H, W) or
(N, H, W) and return one value per image, so a caller can average, or look at the spread.
Classification metrics wrap scikit-learn so that every homework computes them the same way.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

SMOOTH = 1e-8


def _binary(masks: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Squeeze the channel dim and binarise: ``masks > threshold`` (``None``: already 0/1)."""
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"expected one mask channel, got shape {tuple(masks.shape)}")
        masks = masks.squeeze(1)
    if masks.dim() != 3:
        raise ValueError(f"expected masks of shape (N, 1, H, W) or (N, H, W), got {tuple(masks.shape)}")
    return masks > threshold if threshold is not None else masks.bool()


def iou_pytorch(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The course's thresholded IoU score, per image (the Kaggle-style IoU challenge score).

    ``outputs`` and ``labels`` are binary masks (N, 1, H, W) or (N, H, W). The IoU of each
    image is mapped to ``ceil(clamp(20 * (iou - 0.5), 0, 10)) / 10``: 0 below IoU 0.5, then
    steps of 0.1 up to 1.0 at IoU >= 0.95. This follows the course template exactly, so
    threshold logits before calling it (e.g. ``logits > 0``).
    """
    outputs = _binary(outputs, None)
    labels = _binary(labels, None)
    intersection = (outputs & labels).float().sum((1, 2))
    union = (outputs | labels).float().sum((1, 2))
    iou = (intersection + SMOOTH) / (union + SMOOTH)
    return torch.clamp(20 * (iou - 0.5), 0, 10).ceil() / 10


def iou_score(logits_or_masks: torch.Tensor, labels: torch.Tensor, threshold: float | None = 0.0) -> torch.Tensor:
    """Plain intersection over union per image. By default the first argument are logits
    (thresholded at 0, i.e. probability 0.5); pass ``threshold=None`` for binary masks. Two
    empty masks score 1."""
    pred = _binary(logits_or_masks, threshold)
    true = _binary(labels, 0.5)
    intersection = (pred & true).float().sum((1, 2))
    union = (pred | true).float().sum((1, 2))
    return (intersection + SMOOTH) / (union + SMOOTH)


def dice_score(logits_or_masks: torch.Tensor, labels: torch.Tensor, threshold: float | None = 0.0) -> torch.Tensor:
    """Dice coefficient ``2|X∩Y| / (|X|+|Y|)`` per image, with the same conventions as
    :func:`iou_score`."""
    pred = _binary(logits_or_masks, threshold)
    true = _binary(labels, 0.5)
    intersection = (pred & true).float().sum((1, 2))
    total = pred.float().sum((1, 2)) + true.float().sum((1, 2))
    return (2 * intersection + SMOOTH) / (total + SMOOTH)


def roc_auc(y_true, y_score) -> float:
    """ROC-AUC of scores against binary labels (scikit-learn's)."""
    return float(roc_auc_score(np.asarray(y_true), np.asarray(y_score)))


def f1_micro(y_true, y_pred) -> float:
    """Micro-averaged F1, the Simpsons leaderboard metric (equals accuracy for one label per image)."""
    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), average="micro"))


def accuracy(y_true, y_pred) -> float:
    """Share of exact matches."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"accuracy: shapes differ, {y_true.shape} vs {y_pred.shape}")
    return float((y_true == y_pred).mean())
