"""Staged unfreezing for transfer learning (Howard & Ruder, ULMFiT, ACL 2018: gradual
unfreezing and discriminative learning rates).

A schedule such as ``head:3,half:3,all:4`` trains the new head alone for 3 epochs, then the
head and the upper half of the backbone for 3, then everything for 4. Each stage has its own
learning rate (``lr * stage_decay ** k`` for stage ``k``), and inside a stage the backbone's
trainable parameters get ``lr * backbone_mult`` (discriminative LRs: pretrained features
move less than the new head).

Frozen parameters get no gradient (``requires_grad=False``) and the BatchNorm layers whose
parameters are all frozen keep their running statistics (they stay in eval mode while the
rest trains), so a frozen part of the network is bit-identical after a step.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

PARTS = ("head", "half", "all")


@dataclass(frozen=True)
class Stage:
    part: str     # "head", "half" or "all": what is trainable
    epochs: int


def parse_stages(spec: str) -> list[Stage]:
    """``"head:3,half:3,all:4"`` -> stages; a bare number ``"10"`` means ``all:10``.

    Raises:
        ValueError: an unknown part, a non-positive epoch count, or parts out of order.
    """
    stages = []
    for item in spec.split(","):
        item = item.strip()
        part, _, epochs = item.rpartition(":") if ":" in item else ("all", "", item)
        if part not in PARTS:
            raise ValueError(f"stage {item!r}: part must be one of {', '.join(PARTS)}")
        if not epochs.isdigit() or int(epochs) < 1:
            raise ValueError(f"stage {item!r}: epochs must be a positive integer")
        stages.append(Stage(part, int(epochs)))
    order = [PARTS.index(s.part) for s in stages]
    if order != sorted(order):
        raise ValueError(f"stages {spec!r}: unfreeze in the order head, half, all")
    return stages


def total_epochs(stages: list[Stage]) -> int:
    return sum(s.epochs for s in stages)


def stage_at(stages: list[Stage], epoch: int) -> int:
    """Index of the stage that epoch ``epoch`` (0-based) belongs to (the last one past the end)."""
    end = 0
    for k, stage in enumerate(stages):
        end += stage.epochs
        if epoch < end:
            return k
    return len(stages) - 1


def param_groups(model: nn.Module, head: list[str]) -> dict[str, list[str]]:
    """Split parameter names into ``head``, ``upper`` (the later half of the backbone, by
    parameter count) and ``lower`` (the earlier half)."""
    named = [(n, p) for n, p in model.named_parameters()]
    head_set = set(head)
    backbone = [(n, p) for n, p in named if n not in head_set]
    total = sum(p.numel() for _, p in backbone)
    lower, upper, seen = [], [], 0
    for name, p in backbone:
        (lower if seen < total / 2 else upper).append(name)
        seen += p.numel()
    return {"head": [n for n, _ in named if n in head_set], "upper": upper, "lower": lower}


def trainable_groups(part: str) -> tuple[str, ...]:
    return {"head": ("head",), "half": ("head", "upper"), "all": ("head", "upper", "lower")}[part]


def group_lrs(part: str, stage_index: int, lr: float, stage_decay: float, backbone_mult: float) -> dict[str, float]:
    """Learning rate of each group in a stage (0 for a frozen group)."""
    base = lr * stage_decay ** stage_index
    trainable = trainable_groups(part)
    return {g: (0.0 if g not in trainable else base if g == "head" else base * backbone_mult)
            for g in ("head", "upper", "lower")}


def apply_freeze(model: nn.Module, groups: dict[str, list[str]], part: str) -> None:
    """Set ``requires_grad`` for ``part`` and put fully frozen BatchNorm layers in eval mode."""
    trainable = {n for g in trainable_groups(part) for n in groups[g]}
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    freeze_batchnorm(model)


def freeze_batchnorm(model: nn.Module) -> None:
    """Eval mode for every BatchNorm whose parameters are all frozen: its running mean and
    variance stay as they are (call again after ``model.train()``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
