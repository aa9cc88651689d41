"""The reader's task for :class:`core.trainer.Trainer`, CTC loss, and reading crops with a model."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.optim import adamw_one_cycle
from core.trainer import Task

from .data import cut_plate, prepare_crop, to_input, widened
from .models import CRNN, ReaderEnsemble
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


def read_crops(model: CRNN | ReaderEnsemble, images: torch.Tensor, beam_width: int = 1, batch_size: int = 64,
               device: torch.device | str = "cpu") -> list[str]:
    """Texts of crops (N, 3, H, W) read by ``model`` in eval mode (its ``read``)."""
    return read_crops_scored(model, images, batch_size, device, beam_width)[0]


@torch.no_grad()
def read_crops_scored(model: CRNN | ReaderEnsemble, images: torch.Tensor, batch_size: int = 64,
                      device: torch.device | str = "cpu", beam_width: int = 1) -> tuple[list[str], torch.Tensor]:
    """Texts of crops (N, 3, H, W) read by ``model`` in eval mode, greedy by default, and each
    one's confidence, comparable between crops of one input size: :meth:`CRNN.read
    <hw_plates.models.CRNN.read>` (the best path's mean log-probability per frame) or
    :meth:`ReaderEnsemble.read <hw_plates.models.ReaderEnsemble.read>` (the kept text's mean
    log-likelihood per frame)."""
    model.eval().to(device)
    texts: list[str] = []
    scores = []
    for i in range(0, len(images), batch_size):
        batch_texts, batch_scores = model.read(images[i:i + batch_size].to(device), beam_width)
        texts += batch_texts
        scores.append(batch_scores.cpu())
    return texts, torch.cat(scores) if scores else torch.zeros(0)


def read_boxes(reader: CRNN, image: np.ndarray, boxes, margin: float = 0.0, widen: Sequence[float] = (0.0,),
               beam_width: int = 1) -> list[str]:
    """The text of each box (x1, y1, x2, y2) of an RGB photo (H, W, 3), cut from the photo with
    ``margin`` (:func:`hw_plates.data.cut_plate`). With several ``widen`` fractions each box is
    also cut widened by each (:func:`hw_plates.data.widened`: a box that clips a plate's first
    or last character gets it back) and the reading of the cut read most confidently
    (:func:`read_crops_scored`, greedy) is kept; with one, that cut is read (``beam_width``)."""
    if not len(boxes):
        return []
    height, width = reader.input_size
    fractions = list(widen) or [0.0]
    cuts = torch.stack([to_input(prepare_crop(cut_plate(image, widened(box, f), margin), height, width))
                        for box in boxes for f in fractions])
    if len(fractions) == 1:
        return read_crops(reader, cuts, beam_width)
    texts, scores = read_crops_scored(reader, cuts)
    best = scores.view(len(boxes), len(fractions)).argmax(dim=1).tolist()
    return [texts[i * len(fractions) + j] for i, j in enumerate(best)]
