"""The reader's task for :class:`core.trainer.Trainer`, CTC loss, and reading crops with a model."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.optim import adamw_one_cycle
from core.trainer import Task

from .models import CRNN
from .text import decode, levenshtein


def ctc_loss(logits: torch.Tensor, texts: Sequence[str], model: CRNN) -> torch.Tensor:
    """Mean CTC loss per target character (``torch.nn.CTCLoss``'s default ``reduction="mean"``:
    each sequence's negative log-likelihood divided by its text length, then averaged).

    Args:
        logits: (T, N, C) frame scores; log-softmax is taken here.
    """
    targets, target_lengths = model.alphabet.encode_batch(texts)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    input_lengths = torch.full((logits.shape[1],), logits.shape[0], dtype=torch.long)
    return F.ctc_loss(log_probs, targets.to(logits.device), input_lengths, target_lengths,
                      blank=0, reduction="mean", zero_infinity=True)


class ReaderTask(Task):
    """CRNN + CTC. AdamW with a one-cycle LR schedule over the run's optimiser steps (warm-up,
    then cosine decay), stepped per batch; ``one_cycle=False``: a constant LR.

    Validation logs ``exact`` (per crop) and ``cer`` (all edits over all true characters,
    gathered over the epoch), decoded greedily.
    """

    def __init__(self, model: CRNN, lr: float = 1e-3, weight_decay: float = 1e-4, one_cycle: bool = True):
        super().__init__()
        self.model, self.lr, self.weight_decay, self.one_cycle = model, lr, weight_decay, one_cycle
        self._edits = self._chars = 0

    def training_step(self, batch):
        images, texts = batch
        return ctc_loss(self.model(images), texts, self.model)

    def validation_step(self, batch) -> dict:
        images, texts = batch
        logits = self.model(images)
        predictions = decode(logits, self.model.alphabet)
        self._edits += sum(levenshtein(p, t) for p, t in zip(predictions, texts))
        self._chars += sum(len(t) for t in texts)
        exact = torch.tensor([p == t for p, t in zip(predictions, texts)], dtype=torch.float32)
        return {"loss": ctc_loss(logits, texts, self.model), "exact": exact}

    def on_validation_epoch_end(self) -> dict:
        cer = self._edits / max(1, self._chars)
        self._edits = self._chars = 0
        return {"cer": cer}

    def configure_optimizers(self):
        steps = self.trainer.estimated_stepping_batches if self.one_cycle else None
        return adamw_one_cycle(self.model.parameters(), self.lr, steps, self.weight_decay)


@torch.no_grad()
def read_crops(model: CRNN, images: torch.Tensor, beam_width: int = 1, batch_size: int = 64,
               device: torch.device | str = "cpu") -> list[str]:
    """Texts of crops (N, 3, H, W) read by ``model`` in eval mode."""
    model.eval().to(device)
    texts: list[str] = []
    alphabet = model.alphabet
    for i in range(0, len(images), batch_size):
        texts += decode(model(images[i:i + batch_size].to(device)).float().cpu(), alphabet, beam_width)
    return texts
