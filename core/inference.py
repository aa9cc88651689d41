"""Inference helpers shared by every model homework: batched prediction with flip TTA, and
parameter counts.

:func:`model_outputs` runs a model in eval mode over a tensor of inputs or a ``DataLoader`` and
returns its outputs on the CPU. With ``tta_flip=True`` each batch is also run mirrored
left-right and the two outputs are averaged (test-time augmentation); outputs with spatial
dimensions (segmentation logits, N x C x H x W) are mirrored back before averaging, so the
same call serves classifiers and dense predictors.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda x: x.softmax(dim=1),
    "sigmoid": torch.sigmoid,
}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` by default)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _inputs(batch):
    """The model input of a batch: the tensor itself, or the first item of a (x, y, ...) batch."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"predict: expected tensor batches or (inputs, ...) tuples, got {type(batch).__name__}")


def _batches(data: torch.Tensor | DataLoader | Iterable, batch_size: int):
    if isinstance(data, torch.Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size]
    else:
        for batch in data:
            yield _inputs(batch)


def flip_back(output: torch.Tensor) -> torch.Tensor:
    """Undo a left-right flip of the input on a dense (N, C, H, W) output; other shapes are
    flip-invariant (one vector per sample) and returned unchanged."""
    return output.flip(-1) if output.dim() >= 4 else output


@torch.no_grad()
def model_outputs(model: nn.Module, data: torch.Tensor | DataLoader | Iterable, batch_size: int = 64,
                  device: torch.device | str = "cpu", tta_flip: bool = False, activation: str | None = None,
                  channels_last: bool = False) -> torch.Tensor:
    """Outputs of ``model`` in eval mode for every input, concatenated on the CPU as float32.

    Args:
        model: the network; it is switched to eval mode (and left there).
        data: a tensor (N, ...) split into batches of ``batch_size``, or a ``DataLoader`` /
            iterable of batches (tensors, or tuples whose first item is the input).
        device: where the batches are run.
        tta_flip: also run each batch flipped left-right and average the two outputs
            (after ``activation``; dense outputs are flipped back first, see :func:`flip_back`).
        activation: ``None`` (raw outputs), ``"softmax"`` (over dim 1) or ``"sigmoid"``.
        channels_last: feed 4-D inputs in channels-last memory format.

    Shape:
        the model's output with the batches concatenated along dim 0.
    """
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {sorted(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation] if activation else (lambda x: x)
    model.eval()
    outputs = []
    for x in _batches(data, batch_size):
        x = x.to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = act(model(x).float())
        if tta_flip:
            out = (out + flip_back(act(model(x.flip(-1)).float()))) / 2
        outputs.append(out.cpu())
    if not outputs:
        raise ValueError("model_outputs: no inputs (the data is empty)")
    return torch.cat(outputs)
