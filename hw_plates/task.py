"""The reader's task for :class:`core.trainer.Trainer`, CTC loss, and reading crops with a model."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.optim import adamw_one_cycle
from core.trainer import Task

from .data import cut_plate, prepare_crop, to_input, viewed
from .models import CRNN, ReaderEnsemble, likeliest_texts
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
    """Texts of crops (N, 3, H, W) read by ``model`` in eval mode (its ``read``: greedy, or
    prefix beam search for ``beam_width`` > 1)."""
    model.eval().to(device)
    texts: list[str] = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            texts += model.read(images[i:i + batch_size].to(device), beam_width)
    return texts


# The views :func:`read_boxes` reads a found plate in by default: (left, right, top, bottom)
# fractions of the box's width (left, right) or height (top, bottom) added on each side (a
# negative one takes away): the box, widened by 5 %, moved by 4 % of its width to the left and
# to the right, and 10 % taller.
FIVE_VIEWS = ((0.0, 0.0, 0.0, 0.0), (0.05, 0.05, 0.0, 0.0), (0.04, -0.04, 0.0, 0.0), (-0.04, 0.04, 0.0, 0.0),
              (0.0, 0.0, 0.1, 0.1))
BOX_VIEW = ((0.0, 0.0, 0.0, 0.0),)


def reading_views(settings: dict) -> list[tuple[float, float, float, float]]:
    """The views a run's detection settings read plates in: its ``views``, or for a run saved
    before them, its ``widen`` fractions, each as a widened view."""
    if "views" in settings:
        return [tuple(view) for view in settings["views"]]
    return [(f, f, 0.0, 0.0) for f in settings.get("widen", [0.0])]


@torch.no_grad()
def read_boxes(reader: CRNN | ReaderEnsemble, image: np.ndarray, boxes, margin: float = 0.0,
               views: Sequence[Sequence[float]] = BOX_VIEW, beam_width: int = 1) -> list[str]:
    """The text of each box (x1, y1, x2, y2) of an RGB photo (H, W, 3), cut from the photo in
    each of ``views`` (:func:`hw_plates.data.viewed`), each cut grown by ``margin``
    (:func:`hw_plates.data.cut_plate`). With one view, that cut is read (the reader's ``read``);
    with several, every reader reads every cut and the text with the highest log-likelihood
    averaged over all of them is kept (:func:`hw_plates.models.likeliest_texts`): a box that
    clips a plate's first or last character, or cuts into the row of characters, is read in
    the views that do not."""
    if not len(boxes):
        return []
    height, width = reader.input_size
    views = list(views) or list(BOX_VIEW)
    cuts = torch.stack([to_input(prepare_crop(cut_plate(image, viewed(box, view), margin), height, width))
                        for view in views for box in boxes])                   # view-major: view v, box i
    if len(views) == 1:
        return read_crops(reader, cuts, beam_width)
    reader.eval()
    log_probs = reader.log_probs(cuts)                                         # (S, T, V * N, C)
    sources, frames, _, classes = log_probs.shape
    log_probs = log_probs.view(sources, frames, len(views), len(boxes), classes).permute(0, 2, 1, 3, 4)
    return likeliest_texts(log_probs.reshape(sources * len(views), frames, len(boxes), classes),
                           reader.alphabet, beam_width, reader.formats)[0]
