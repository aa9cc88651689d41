"""Checkpoints on disk: atomic writes, weights-only reads, and a task's weights without DDP.

A checkpoint is a dict of tensors and plain Python values. It is written atomically
(:func:`save_atomic`: a temporary file, then ``os.replace``, so a crash mid-write leaves the old
file intact) and read with ``torch.load(weights_only=True)`` (:func:`read_weights_only`), so a
file that would run code when loaded is refused. Every ``torch.load`` of the project is here.

The Trainer's checkpoints (``best.pt``, ``last.pt``) hold, beside the optimisers' state, the
task's weights under ``"task"`` and, for a run with :class:`core.callbacks.EMA`, the averaged
weights under ``"ema"``: :func:`load_checkpoint` reads one, :func:`inference_weights` picks the
weights a run reports, :func:`load_task_weights` loads them into a task with one clear error
for a checkpoint of another model.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError


def save_atomic(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``: readers see the
    old file or the new one, never half of one. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def read_weights_only(path: str | os.PathLike, map_location="cpu", what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)``: tensors and plain Python values only.

    Raises:
        UserError: the file is missing, holds Python objects that would run code when loaded
            (named in the message), or is not a file ``torch.load`` can read. ``what`` names
            the kind of file in the message.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for code-carrying pickles and junk, others for junk
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or \
            re.search(r"unsupported GLOBAL (\S+) whose module", text)  # a blocked module: os, posix, ...
        if found:
            raise UserError(f"{path}: refused: the file holds Python objects that could run code when loaded "
                            f"({found.group(1)}); only files of tensors and plain values are read") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text) or re.search(r"(.+)", text)
        reason = detail.group(1).strip() if detail else type(exc).__name__
        raise UserError(f"{path}: cannot read {what} ({reason[:200]})") from None


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def task_state_dict(task: nn.Module) -> dict:
    """The task's weights with DDP wrappers removed, so they load into an unwrapped task."""
    state = {}
    for name, child in task.named_children():
        for key, value in unwrap(child).state_dict().items():
            state[f"{name}.{key}"] = value
    for key, value in task.state_dict().items():  # parameters/buffers registered on the task itself
        if "." not in key:
            state[key] = value
    return state


def task_named_parameters(task: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs named as in :func:`task_state_dict` (no DDP prefixes)."""
    yield from task.named_parameters(recurse=False)
    for name, child in task.named_children():
        for key, param in unwrap(child).named_parameters():
            yield f"{name}.{key}", param


def load_checkpoint(path: str | os.PathLike, task: nn.Module | None = None, map_location="cpu",
                    ema: bool = True) -> dict:
    """Read a checkpoint written by the Trainer and, if ``task`` is given, load its weights.

    The file is read weights-only (:func:`read_weights_only`). With ``ema`` (default), a
    checkpoint of a run with :class:`core.callbacks.EMA` loads the averaged weights (the ones
    validation used) into ``task``.

    Raises:
        UserError: a missing file, a file that would run code, a file that is not a Trainer
            checkpoint, or a checkpoint of another model (the message names the file).
    """
    path = Path(path)
    checkpoint = read_weights_only(path, map_location)
    if not isinstance(checkpoint, dict) or "task" not in checkpoint:
        raise UserError(f"{path}: not a checkpoint written by core.Trainer (no 'task' entry)")
    if task is not None:
        load_task_weights(task, inference_weights(checkpoint) if ema else checkpoint["task"], path)
    return checkpoint


def inference_weights(checkpoint: dict) -> dict:
    """The weights a run reports: the EMA average when the run kept one, else the trained ones."""
    return checkpoint.get("ema") or checkpoint["task"]


def submodule_weights(checkpoint: dict, prefix: str = "model.") -> dict:
    """The state dict of the task's sub-module ``prefix`` (``model.`` by default) in a Trainer
    checkpoint: from :func:`inference_weights`, with the prefix removed."""
    return {k.removeprefix(prefix): v for k, v in inference_weights(checkpoint).items() if k.startswith(prefix)}


def load_task_weights(task: nn.Module, state: dict, source: str | os.PathLike = "checkpoint") -> None:
    """``task.load_state_dict(state)``, with a mismatch reported as one :class:`UserError` line
    naming ``source``, the task's class and the first missing, unexpected or reshaped keys."""
    own = task_state_dict(task)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        problems = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs for", shapes)):
            if keys:
                problems.append(f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})")
        raise UserError(f"{source}: checkpoint of another model ({type(task).__name__} does not fit it): "
                        + "; ".join(problems))
    task.load_state_dict(state)
