"""Detection metrics: mAP from a maintained implementation, precision / recall / F1 by hand.

- ``map50`` (PASCAL-style AP at IoU 0.5, averaged over classes) and ``map`` (COCO's AP averaged
  over IoU 0.50:0.05:0.95) come from ``torchmetrics.detection.MeanAveragePrecision`` with the
  pycocotools backend (101-point interpolated precision, as COCO).
- Per-class precision, recall and F1 at IoU 0.5 for detections scoring at least a threshold
  use the VOC matching rule (:func:`match_detections`), written out here as the course asks.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou


def mean_average_precision(predictions: Sequence[dict], targets: Sequence[dict],
                           class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``map50``, ``map`` and, when ``class_names`` are given, ``ap50_<name>`` per class.

    Args:
        predictions: per image ``{"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,)}``.
        targets: per image ``{"boxes": (M, 4) xyxy, "labels": (M,)}``.
    A class with no true box in any image has no AP (NaN), as in COCO.
    """
    from torchmetrics.detection import MeanAveragePrecision

    preds = [{"boxes": p["boxes"].float().cpu(), "scores": p["scores"].float().cpu(),
              "labels": p["labels"].long().cpu()} for p in predictions]
    truth = [{"boxes": t["boxes"].float().cpu(), "labels": t["labels"].long().cpu()} for t in targets]
    # COCO's own float64 thresholds: torchmetrics' float32 defaults (0.6000000238...) put a
    # recall that equals a threshold exactly on the other side of it than pycocotools does
    recall_points = np.linspace(0.0, 1.0, 101).tolist()
    coco = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                iou_thresholds=np.linspace(0.5, 0.95, 10).tolist(), rec_thresholds=recall_points)
    coco.update(preds, truth)
    result = coco.compute()
    scores = {"map50": float(result["map_50"]), "map": float(result["map"])}
    if class_names is not None:
        at50 = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5],
                                    rec_thresholds=recall_points, class_metrics=True, backend="pycocotools")
        at50.update(preds, truth)
        per_class = at50.compute()
        ap = dict(zip(per_class["classes"].view(-1).tolist(), per_class["map_per_class"].view(-1).tolist()))
        for index, name in enumerate(class_names):
            value = ap.get(index, float("nan"))
            scores[f"ap50_{name}"] = float("nan") if value < 0 else float(value)
    return scores


def match_detections(pred_boxes: torch.Tensor, pred_scores: torch.Tensor, true_boxes: torch.Tensor,
                     iou_threshold: float = 0.5) -> torch.Tensor:
    """True-positive flags of one image's detections of one class (VOC rule): in order of
    falling score, a detection is a hit if its best-overlapping true box not yet taken has
    IoU >= ``iou_threshold``; each true box is taken at most once."""
    hits = torch.zeros(len(pred_boxes), dtype=torch.bool)
    if len(pred_boxes) == 0 or len(true_boxes) == 0:
        return hits
    iou = box_iou(pred_boxes.float(), true_boxes.float())
    taken = torch.zeros(len(true_boxes), dtype=torch.bool)
    for i in pred_scores.argsort(descending=True).tolist():
        overlaps = iou[i].masked_fill(taken, -1.0)
        best = int(overlaps.argmax())
        if overlaps[best] >= iou_threshold:
            hits[i], taken[best] = True, True
    return hits


def precision_recall_f1(predictions: Sequence[dict], targets: Sequence[dict], num_classes: int,
                        score_threshold: float = 0.3, iou_threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """Per-class counts and rates of detections scoring >= ``score_threshold``.

    Returns tensors of length ``num_classes``: ``tp``, ``fp``, ``fn``, ``precision`` (tp / (tp +
    fp), 0 with no detection), ``recall`` (tp / (tp + fn), 0 with no true box) and ``f1``.
    """
    tp, fp, fn = (torch.zeros(num_classes, dtype=torch.long) for _ in range(3))
    for pred, true in zip(predictions, targets, strict=True):
        keep = pred["scores"] >= score_threshold
        for c in range(num_classes):
            mine = keep & (pred["labels"] == c)
            truth = true["boxes"][true["labels"] == c]
            hits = match_detections(pred["boxes"][mine], pred["scores"][mine], truth, iou_threshold)
            tp[c] += int(hits.sum())
            fp[c] += int((~hits).sum())
            fn[c] += len(truth) - int(hits.sum())
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / (tp + fn).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def detection_metrics(predictions: Sequence[dict], targets: Sequence[dict], class_names: Sequence[str],
                      score_threshold: float = 0.3) -> dict[str, float]:
    """Everything a detection report needs, flat: ``map50``, ``map``, ``ap50_<class>``, and at
    IoU 0.5 for scores >= ``score_threshold``: ``precision_<class>``, ``recall_<class>``,
    ``f1_<class>`` and the same over all classes together (``precision``, ``recall``, ``f1``)."""
    metrics = mean_average_precision(predictions, targets, class_names)
    counts = precision_recall_f1(predictions, targets, len(class_names), score_threshold)
    for i, name in enumerate(class_names):
        for key in ("precision", "recall", "f1"):
            metrics[f"{key}_{name}"] = float(counts[key][i])
    tp, fp, fn = (int(counts[k].sum()) for k in ("tp", "fp", "fn"))
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    metrics.update(precision=precision, recall=recall,
                   f1=2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return metrics
