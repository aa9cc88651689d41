"""Optimiser recipes shared by the homeworks' tasks."""
from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw_one_cycle(parameters: Iterable[torch.nn.Parameter], lr: float, total_steps: int | None,
                    weight_decay: float = 1e-4, pct_start: float = 0.15) -> dict | torch.optim.Optimizer:
    """AdamW under the one-cycle schedule (Smith and Topin 2019: warm-up over ``pct_start`` of
    the steps, then cosine decay to almost 0), stepped per batch, in the form
    ``Task.configure_optimizers`` returns; a plain AdamW when ``total_steps`` is None.
    Pass ``self.trainer.estimated_stepping_batches`` as ``total_steps``."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    if total_steps is None:
        return optimizer
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                                    pct_start=pct_start)
    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}
