"""Plate formats: where plates put letters and where digits, learned from the training texts,
and reading with them.

A plate's *shape* writes each letter as ``L`` and each digit as ``D`` (any other character
stands for itself): ``RK867AD`` is ``LLDDDLL``, ``4GLS168`` is ``DLLLDDD``. Most regions issue a
few shapes, so a reading whose shape no training plate had is more likely a misread (a ``0``
read for an ``O``, a ``1`` for an ``I``, a thin letter dropped) than a new kind of plate.

:class:`PlateFormats` counts the shapes of the training texts. Reading with it
(:func:`hw_plates.models.likeliest_texts`), the candidates are the readers' own texts and, for
every shape seen at least ``min_count`` times whose length is within one of a reading's, the
best frame path that spells a text of that shape (:func:`shaped_paths`: the Viterbi path of
CTC restricted to letters or digits position by position); each candidate scores its CTC
log-likelihood (averaged over readers and views) plus ``weight`` times the log of its shape's
share of the training texts (:meth:`PlateFormats.log_prior`). A plate of an unseen shape is
still read when its likelihood is clearly higher: the prior moves close calls only.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from .text import Alphabet

LETTER, DIGIT = "L", "D"
NEG = -1e9          # log-probability of an impossible state


def shape_of(text: str) -> str:
    """``L`` for each letter, ``D`` for each digit, any other character as it is."""
    return "".join(LETTER if c.isalpha() else DIGIT if c.isdigit() else c for c in text)


@dataclass
class PlateFormats:
    """Shapes of training plate texts (:func:`shape_of`) with the number of distinct texts of
    each; ``weight`` scales the log-prior added to a reading's log-likelihood, and shapes seen
    fewer than ``min_count`` times propose no candidates (they still score their prior)."""

    counts: dict[str, int] = field(default_factory=dict)
    weight: float = 0.7
    min_count: int = 2

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"weight must be at least 0, got {self.weight}")
        if self.min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {self.min_count}")
        if any(not isinstance(n, int) or n < 1 for n in self.counts.values()):
            raise ValueError("shape counts must be positive integers")
        self.total = sum(self.counts.values())

    @classmethod
    def from_texts(cls, texts: Iterable[str], weight: float = 0.7, min_count: int = 2) -> "PlateFormats":
        """The shapes of the distinct non-empty ``texts``."""
        counts = Counter(shape_of(t) for t in set(texts) if t)
        return cls(dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), weight, min_count)

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "weight": self.weight, "min_count": self.min_count}

    @classmethod
    def from_dict(cls, saved: dict) -> "PlateFormats":
        return cls({str(k): int(v) for k, v in saved["counts"].items()}, float(saved["weight"]),
                   int(saved["min_count"]))

    @property
    def active(self) -> bool:
        """Whether reading with these formats differs from reading without (a positive weight
        and at least one shape)."""
        return self.weight > 0 and self.total > 0

    def log_prior(self, text: str) -> float:
        """log((count of the text's shape + 0.5) / number of training texts): an unseen shape
        counts half a text."""
        return math.log((self.counts.get(shape_of(text), 0) + 0.5) / max(self.total, 1))

    def shapes(self, length: int) -> list[str]:
        """The shapes of ``length`` characters seen at least ``min_count`` times."""
        return [s for s, n in self.counts.items() if len(s) == length and n >= self.min_count]

    def candidates(self, log_probs: torch.Tensor, lengths: Sequence[Iterable[int]], alphabet: Alphabet
                   ) -> list[set[str]]:
        """For N items read by S sources, frame log-probabilities (S, T, N, C), and each item's
        reading lengths: for each item, the texts of the best frame paths of every frequent shape
        of a length within one of its lengths, one per source and shape (:func:`shaped_paths`);
        shapes with a character outside ``alphabet`` are skipped."""
        sources, frames, n_items, classes = log_probs.shape
        wanted = [{n + d for n in item for d in (-1, 0, 1) if n + d > 0} for item in lengths]
        out: list[set[str]] = [set() for _ in range(n_items)]
        flat = log_probs.permute(2, 0, 1, 3).reshape(n_items * sources, frames, classes)   # item-major
        for n in sorted(set().union(*wanted)):
            masks = [m for m in (shape_mask(s, alphabet) for s in self.shapes(n)) if m is not None]
            items = [i for i, w in enumerate(wanted) if n in w]
            if not masks or not items:
                continue
            rows = torch.tensor([i * sources + s for i in items for s in range(sources)])
            labels, scores = shaped_paths(flat[rows], torch.stack(masks))
            labels = labels.view(len(items), -1, n).tolist()
            fits = (scores.view(len(items), -1) > NEG / 2).tolist()     # a path of that shape fits in the frames
            for item, texts, ok in zip(items, labels, fits):
                out[item].update(alphabet.decode(t) for t, good in zip(texts, ok) if good)
        return out


def shape_mask(shape: str, alphabet: Alphabet) -> torch.Tensor | None:
    """(len(shape), classes) bool: the classes allowed at each position (``L``: the alphabet's
    letters, ``D``: its digits, another character: itself); ``None`` if a position allows none."""
    letters = torch.tensor([False] + [c.isalpha() for c in alphabet.chars])
    digits = torch.tensor([False] + [c.isdigit() for c in alphabet.chars])
    rows = []
    for symbol in shape:
        if symbol == LETTER:
            row = letters
        elif symbol == DIGIT:
            row = digits
        else:
            row = torch.tensor([False] + [c == symbol for c in alphabet.chars])
        if not row.any():
            return None
        rows.append(row)
    return torch.stack(rows)


def shaped_paths(log_probs: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The best CTC frame path (blank = class 0) that spells exactly ``n`` characters, the
    ``j``-th of them one that ``masks[p, j]`` allows, for each source and mask.

    Args:
        log_probs: (S, T, C) frame log-probabilities of S sources.
        masks: (P, n, C) bool, n >= 1.

    Returns:
        labels (S, P, n) class indices of the path's text and its log-probability (S, P), at
        most ``NEG / 2`` when no path fits (``n`` characters with the blanks that repeated
        characters need do not fit in T frames).
    """
    S, T, C = log_probs.shape
    P, n, _ = masks.shape
    lp = log_probs.float()
    allowed = torch.where(masks, 0.0, NEG)[None]                                    # (1, P, n, C)
    classes = torch.arange(C)
    blank = torch.full((S, P, n + 1), NEG)   # blank[..., j]: j characters spelled, last frame a blank
    blank[:, :, 0] = 0.0
    char = torch.full((S, P, n, C), NEG)     # char[..., j, c]: last frame emits character j as class c
    history, blank_from_char, char_from = [], [], []
    for t in range(T):
        spelled = torch.cat([torch.full((S, P, 1), NEG), char.max(-1).values], -1)  # char j-1 ended
        new_blank = torch.maximum(blank, spelled)
        top2 = char.topk(min(2, C), dim=-1)
        other = torch.where(top2.indices[..., :1] == classes, top2.values[..., -1:], top2.values[..., :1])
        next_char = torch.cat([torch.full((S, P, 1, C), NEG), other[:, :, :-1]], 2)  # from a different char j-1
        choices = torch.stack([char, blank[:, :, :n, None].expand(S, P, n, C), next_char], -1)
        new_char, came = choices.max(-1)                                           # 0 stay, 1 blank, 2 char
        blank_from_char.append(spelled > blank)
        char_from.append(came)
        blank = new_blank + lp[:, t, None, None, 0]
        char = new_char + lp[:, t, None, None, :] + allowed
        history.append(char)
    end_char = char[:, :, n - 1].max(-1)
    scores = torch.maximum(blank[:, :, n], end_char.values)
    # walk back from the end, all sources and masks at once
    s_index, p_index = torch.meshgrid(torch.arange(S), torch.arange(P), indexing="ij")
    in_char = blank[:, :, n] < end_char.values
    j = torch.where(in_char, n - 1, n)
    c = end_char.indices.clone()
    labels = torch.zeros(S, P, n, dtype=torch.long)
    for t in range(T - 1, 0, -1):
        jc = j.clamp(max=n - 1)
        labels[s_index[in_char], p_index[in_char], jc[in_char]] = c[in_char]
        came = char_from[t][s_index, p_index, jc, c]
        previous = history[t - 1][s_index, p_index, (j - 1).clamp(min=0)]            # (S, P, C): char j-1 at t-1
        excluding = previous.scatter(-1, c[..., None], NEG)
        # from a char state: stay (0), leave to blank j (1) or step back to a different char j-1 (2)
        step_back_char = in_char & (came == 2)
        to_blank = in_char & (came == 1)
        # from a blank state j: the previous frame was char j-1 if blank_from_char says so
        blank_to_char = ~in_char & blank_from_char[t][s_index, p_index, j]
        new_c = torch.where(step_back_char, excluding.argmax(-1), torch.where(blank_to_char, previous.argmax(-1), c))
        j = torch.where(step_back_char | blank_to_char, j - 1, j)
        in_char = (in_char & ~to_blank) | blank_to_char
        c = new_c
    jc = j.clamp(max=n - 1)
    labels[s_index[in_char], p_index[in_char], jc[in_char]] = c[in_char]
    return labels, scores
