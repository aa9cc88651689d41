"""Plate texts: the alphabet, CTC decoding (greedy and prefix beam search) and the reading metrics.

CTC (Graves et al., ICML 2006) scores a frame sequence of class probabilities over the
alphabet plus a *blank*. A frame path maps to a text by merging repeated symbols and then
dropping blanks (``--AA-B-B`` reads ``ABB``). Class 0 is the blank; character ``i`` of the
alphabet is class ``i + 1``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

DEFAULT_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BLANK = 0


class Alphabet:
    """Maps plate texts to CTC class indices (1..len) and back; 0 is the blank."""

    def __init__(self, chars: str = DEFAULT_ALPHABET):
        if not chars:
            raise ValueError("the alphabet is empty")
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"the alphabet repeats {''.join(repeated)!r}")
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def num_classes(self) -> int:
        """Alphabet plus the blank."""
        return len(self.chars) + 1

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside the alphabet, in order of first appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str) -> list[int]:
        bad = self.unknown(text)
        if bad:
            raise ValueError(f"text {text!r} has character(s) {''.join(bad)!r} outside the alphabet {self.chars!r}")
        return [self.index[c] for c in text]

    def decode(self, labels: Sequence[int]) -> str:
        """Class indices (no blanks) back to text."""
        return "".join(self.chars[i - 1] for i in labels)

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated targets and their lengths, the form ``torch.nn.CTCLoss`` takes."""
        encoded = [self.encode(t) for t in texts]
        targets = torch.tensor([i for e in encoded for i in e], dtype=torch.long)
        return targets, torch.tensor([len(e) for e in encoded], dtype=torch.long)

    # the alphabet travels inside the model's state dict as a buffer of character codes
    def to_tensor(self) -> torch.Tensor:
        return torch.tensor([ord(c) for c in self.chars], dtype=torch.int32)

    @classmethod
    def from_tensor(cls, codes: torch.Tensor) -> "Alphabet":
        return cls("".join(chr(int(c)) for c in codes))


def collapse(path: Sequence[int], blank: int = BLANK) -> list[int]:
    """The CTC many-to-one map: merge runs of one symbol, then drop blanks."""
    out, previous = [], None
    for symbol in path:
        if symbol != previous and symbol != blank:
            out.append(int(symbol))
        previous = symbol
    return out


def greedy_decode(log_probs: torch.Tensor, alphabet: Alphabet) -> list[str]:
    """Best path decoding: the most likely class per frame, collapsed.

    Args:
        log_probs: (T, N, C) frame scores (log-probabilities or logits: only the argmax matters).
    """
    best = log_probs.argmax(-1).T.cpu().numpy()  # (N, T)
    return [alphabet.decode(collapse(row)) for row in best]


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def beam_decode_one(log_probs: np.ndarray, beam_width: int = 8, prune: float = -12.0) -> list[int]:
    """CTC prefix beam search (Graves 2012, ch. 7; Hannun et al. 2014) for one sequence.

    Each prefix keeps two log-probabilities: of the frame paths that give it and end in a
    blank, and of those that end in its last symbol. A repeated symbol extends the prefix only
    after a blank; otherwise it stays in the same prefix. Symbols with a frame log-probability
    below ``prune`` are not tried (they cannot change the top beams).

    Args:
        log_probs: (T, C) log-probabilities, class 0 the blank.
    Returns:
        the best prefix as class indices.
    """
    neg_inf = -math.inf
    beams: dict[tuple, tuple[float, float]] = {(): (0.0, neg_inf)}  # prefix -> (log p_blank, log p_symbol)
    for frame in log_probs:
        candidates = np.flatnonzero(frame > prune)
        nxt: dict[tuple, list[float]] = {}

        def add(prefix, blank_lp=neg_inf, symbol_lp=neg_inf):
            entry = nxt.setdefault(prefix, [neg_inf, neg_inf])
            entry[0] = _logsumexp(entry[0], blank_lp)
            entry[1] = _logsumexp(entry[1], symbol_lp)

        for prefix, (p_b, p_s) in beams.items():
            total = _logsumexp(p_b, p_s)
            for c in candidates:
                lp = float(frame[c])
                if c == BLANK:
                    add(prefix, blank_lp=total + lp)
                elif prefix and prefix[-1] == c:
                    add(prefix, symbol_lp=p_s + lp)            # the same symbol continues
                    add(prefix + (int(c),), symbol_lp=p_b + lp)  # a new one after a blank
                else:
                    add(prefix + (int(c),), symbol_lp=total + lp)
        ranked = sorted(nxt.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)[:beam_width]
        beams = {prefix: (v[0], v[1]) for prefix, v in ranked}
    best = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
    return list(best[0])


def beam_decode(log_probs: torch.Tensor, alphabet: Alphabet, beam_width: int = 8) -> list[str]:
    """:func:`beam_decode_one` over a batch of (T, N, C) log-probabilities."""
    lp = torch.log_softmax(log_probs.float(), -1).permute(1, 0, 2).cpu().numpy()
    return [alphabet.decode(beam_decode_one(seq, beam_width)) for seq in lp]


def decode(log_probs: torch.Tensor, alphabet: Alphabet, beam_width: int = 1) -> list[str]:
    """Greedy decoding for ``beam_width`` 1, prefix beam search above."""
    return greedy_decode(log_probs, alphabet) if beam_width <= 1 else beam_decode(log_probs, alphabet, beam_width)


# -- metrics -----------------------------------------------------------------------------------
def levenshtein(a: str, b: str) -> int:
    """Edit distance: the fewest insertions, deletions and substitutions turning ``a`` into ``b``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def reading_metrics(predictions: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """``exact`` (share of texts read whole), ``cer`` (character error rate: all edits over all
    true characters) and ``mean_levenshtein`` (edits per text)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} texts")
    if not truths:
        raise ValueError("no texts to score")
    edits = [levenshtein(p, t) for p, t in zip(predictions, truths)]
    return {"exact": float(np.mean([p == t for p, t in zip(predictions, truths)])),
            "cer": sum(edits) / max(1, sum(len(t) for t in truths)),
            "mean_levenshtein": float(np.mean(edits))}


def end_to_end_metrics(true_texts: Sequence[Sequence[str]], read_texts: Sequence[Sequence[str]]) -> dict[str, float]:
    """Photo-level scores of detector + reader, given per photo the true plate texts and, in the
    same order, what was read for each (``""`` where no detection matched the plate).

    ``e2e_exact``: share of true plates read whole; ``e2e_levenshtein``: edits per photo (summed
    over its plates), the contest's kind of score; ``e2e_cer``: all edits over all true characters.
    """
    if len(true_texts) != len(read_texts):
        raise ValueError(f"{len(read_texts)} photos read for {len(true_texts)} photos")
    plates = [(t, r) for truths, reads in zip(true_texts, read_texts) for t, r in zip(truths, reads, strict=True)]
    if not plates:
        raise ValueError("no plates to score")
    per_photo = [sum(levenshtein(r, t) for t, r in zip(truths, reads)) for truths, reads in zip(true_texts, read_texts)]
    return {"e2e_exact": float(np.mean([t == r for t, r in plates])),
            "e2e_levenshtein": float(np.mean(per_photo)),
            "e2e_cer": sum(per_photo) / max(1, sum(len(t) for t, _ in plates))}
