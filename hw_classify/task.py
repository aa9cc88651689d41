"""The classification task for :class:`core.trainer.Trainer`, with staged unfreezing.

Loss: cross-entropy with optional label smoothing (Szegedy et al., CVPR 2016: the target is
``(1 - eps)`` on the true class plus ``eps / K`` everywhere) and optional class weights
(``N / (K * n_c)``, scikit-learn's "balanced"). Validation reports the loss, accuracy and
macro/micro F1 over the whole validation set (:class:`core.metrics.ClassificationMeter`).

Optimiser: AdamW over three parameter groups (head, upper and lower backbone half, see
:mod:`hw_classify.stages`). With one stage the LR follows a one-cycle schedule (Smith &
Topin 2019: warm-up, then cosine decay), stepped per batch; with several stages each stage
has a constant LR set by :class:`StageSchedule`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.callbacks import Callback
from core.metrics import ClassificationMeter
from core.trainer import Task

from .stages import Stage, apply_freeze, freeze_batchnorm, group_lrs, param_groups, stage_at

GROUPS = ("head", "upper", "lower")


def balanced_class_weights(labels, num_classes: int) -> torch.Tensor:
    """``N / (K * n_c)`` per class (a class absent from ``labels`` gets weight 0)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    weights = np.divide(len(labels), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.tensor(weights, dtype=torch.float32)


class ClassifyTask(Task):
    """Image classification with staged unfreezing.

    Args:
        model / head: the network and its head's parameter names (:class:`hw_classify.models.Classifier`).
        num_classes: K.
        stages: the unfreezing schedule; ``[Stage("all", E)]`` trains everything from the start.
        lr: the head's LR in the first stage (the peak LR of the one-cycle schedule with one stage).
        stage_decay / backbone_mult: see :func:`hw_classify.stages.group_lrs`.
        one_cycle: with one stage, a one-cycle schedule over the whole run
            (sized with ``trainer.estimated_stepping_batches``).
        label_smoothing / class_weights: loss options.
    """

    def __init__(self, model: nn.Module, head: list[str], num_classes: int, stages: list[Stage], lr: float = 1e-3,
                 weight_decay: float = 1e-4, stage_decay: float = 0.3, backbone_mult: float = 0.1,
                 one_cycle: bool = True, label_smoothing: float = 0.0,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.stages, self.lr, self.weight_decay = stages, lr, weight_decay
        self.stage_decay, self.backbone_mult = stage_decay, backbone_mult
        self.one_cycle = one_cycle and len(stages) == 1
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights if class_weights is not None else torch.ones(num_classes))
        self.groups = param_groups(model, head)
        self.meter = ClassificationMeter(num_classes)
        self.stage = -1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            freeze_batchnorm(self.model)  # frozen BatchNorm keeps its statistics
        return self

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.class_weights, label_smoothing=self.label_smoothing)

    def training_step(self, batch):
        images, labels = batch
        return self.loss(self.model(images), labels)

    def validation_step(self, batch) -> dict:
        images, labels = batch
        logits = self.model(images).float()
        self.meter.update(logits, labels)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float()}

    def on_validation_epoch_end(self) -> dict:
        scores = self.meter.compute(reset=True)
        return {"f1_macro": scores["f1_macro"], "f1_micro": scores["f1_micro"]}

    def configure_optimizers(self):
        named = dict(self.model.named_parameters())
        groups = [{"params": [named[n] for n in self.groups[g]], "name": g} for g in GROUPS if self.groups[g]]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        self.set_stage(0, optimizer)
        if not self.one_cycle:
            return optimizer
        max_lr = [group["lr"] for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=self.trainer.estimated_stepping_batches, pct_start=0.2)
        return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}

    def set_stage(self, index: int, optimizer: torch.optim.Optimizer) -> None:
        """Freeze/unfreeze for stage ``index`` and, without one-cycle, set each group's LR."""
        apply_freeze(self.model, self.groups, self.stages[index].part)
        if not (self.one_cycle and self.stage >= 0):  # one-cycle owns the LRs once it has started
            lrs = group_lrs(self.stages[index].part, index, self.lr, self.stage_decay, self.backbone_mult)
            for group in optimizer.param_groups:
                group["lr"] = lrs[group["name"]]
        self.stage = index


class StageSchedule(Callback):
    """Moves a :class:`ClassifyTask` to the stage of the next epoch (also after a resume)."""

    order = 5

    def on_fit_start(self, trainer, task) -> None:
        self._update(trainer, task)

    def on_epoch_end(self, trainer, task, metrics) -> None:
        self._update(trainer, task)

    def _update(self, trainer, task: ClassifyTask) -> None:
        index = stage_at(task.stages, trainer.epoch)
        if index != task.stage:
            task.set_stage(index, trainer.optimizers[0])
            if len(task.stages) > 1 and trainer.epoch < sum(s.epochs for s in task.stages):
                trainer.log(f"stage {index + 1}/{len(task.stages)}: training {task.stages[index].part}, "
                            f"lr {task.lr * task.stage_decay ** index:g}")
