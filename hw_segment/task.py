"""The segmentation task for :class:`core.trainer.Trainer`, prediction and scoring functions."""
from __future__ import annotations

import torch
from torch import nn

from core.metrics import dice_score, iou_pytorch, iou_score
from core.optim import adamw_one_cycle
from core.trainer import Task


def score_logits(logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image ``iou`` (plain IoU), ``dice`` and ``score`` (the course's thresholded
    ``iou_pytorch``) of logits thresholded at 0 (probability 0.5) against binary masks."""
    truth = masks > 0.5
    return {"iou": iou_score(logits, masks), "dice": dice_score(logits, masks),
            "score": iou_pytorch(logits > 0, truth)}


class SegmentationTask(Task):
    """Binary segmentation: ``loss_fn(logits, masks)``; AdamW with a one-cycle LR schedule
    (warm-up then cosine decay, stepped per batch) over the run's optimiser steps, as the
    Trainer counts them (``one_cycle=False``: a constant LR)."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-4,
                 one_cycle: bool = True):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn
        self.lr, self.weight_decay, self.one_cycle = lr, weight_decay, one_cycle

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch):
        images, masks = batch
        return self.loss_fn(self.model(images), masks)

    def validation_step(self, batch) -> dict:
        images, masks = batch
        logits = self.model(images)
        return {"loss": self.loss_fn(logits.float(), masks), **score_logits(logits.float(), masks)}

    def configure_optimizers(self):
        total_steps = self.trainer.estimated_stepping_batches if self.one_cycle else None
        return adamw_one_cycle(self.model.parameters(), self.lr, total_steps, self.weight_decay)
