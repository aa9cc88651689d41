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


# -- multi-class classification -----------------------------------------------------------------
def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``cm[i, j]`` = number of samples of true class ``i`` predicted as class ``j``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"confusion_matrix: shapes differ, {y_true.shape} vs {y_pred.shape}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Accuracy, micro/macro F1 and per-class precision, recall, F1 and support from a
    confusion matrix (rows: true class). A class that is never predicted has precision 0; one
    with no samples has recall 0 (scikit-learn's ``zero_division=0``). Macro F1 averages the
    per-class F1 over the classes present in the truth or the predictions (scikit-learn's
    ``labels=None`` convention)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted, support = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = (support + predicted) > 0
    total = cm.sum()
    accuracy_ = float(tp.sum() / total) if total else float("nan")
    return {"accuracy": accuracy_, "f1_micro": accuracy_,  # one label per sample: micro F1 = accuracy
            "f1_macro": float(f1[present].mean()) if present.any() else float("nan"),
            "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def classification_scores(y_true, y_pred, num_classes: int) -> dict[str, np.ndarray | float]:
    """:func:`scores_from_confusion` of the labels ``y_true`` / ``y_pred``, plus the matrix as ``cm``."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return {**scores_from_confusion(cm), "cm": cm}


def f1_macro(y_true, y_pred) -> float:
    """Macro-averaged F1 (scikit-learn's): the mean of the per-class F1, every class counting once."""
    return float(f1_score(np.asarray(y_true), np.asarray(y_pred), average="macro"))


class ClassificationMeter:
    """Accumulates a confusion matrix over a validation epoch and turns it into scores.

    Use it from a task::

        def validation_step(self, batch):
            x, y = batch
            logits = self.model(x)
            self.meter.update(logits, y)
            return {"loss": F.cross_entropy(logits, y)}

        def on_validation_epoch_end(self):
            return self.meter.compute(reset=True)   # {"f1_macro": ..., "f1_micro": ..., "accuracy": ...}

    Under DDP the matrices of all processes are summed first, so every process reports the
    scores of the whole validation set.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.cm.zero_()

    def update(self, logits_or_labels: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: logits/probabilities (N, C) (argmax taken) or predicted labels (N,)."""
        pred = logits_or_labels.argmax(1) if logits_or_labels.dim() == 2 else logits_or_labels
        k = self.num_classes
        index = target.detach().long().cpu() * k + pred.detach().long().cpu()
        self.cm += torch.bincount(index, minlength=k * k).reshape(k, k)

    def confusion(self) -> np.ndarray:
        """The confusion matrix so far, summed over processes under DDP."""
        cm = self.cm.clone()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            cm = cm.to("cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(cm)
        return cm.cpu().numpy()

    def compute(self, reset: bool = False) -> dict[str, float]:
        """``accuracy``, ``f1_macro``, ``f1_micro`` of everything added since the last reset."""
        scores = scores_from_confusion(self.confusion())
        if reset:
            self.reset()
        return {key: scores[key] for key in ("accuracy", "f1_macro", "f1_micro")}
