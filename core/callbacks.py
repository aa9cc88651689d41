"""Callbacks: small objects the :class:`core.trainer.Trainer` calls at fixed points.

Each has ``state_dict``/``load_state_dict`` so a resumed run continues exactly where it
stopped (the early-stopping counter, the best score so far). Callbacks run in ascending
``order``; :class:`ModelCheckpoint` runs last, so the checkpoint it writes already holds the
other callbacks' updated state.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Task, Trainer


class Callback:
    """Base class. Override what you need; every hook receives the trainer."""

    order = 50

    def on_fit_start(self, trainer: "Trainer", task: "Task") -> None: ...

    def on_epoch_end(self, trainer: "Trainer", task: "Task", metrics: dict) -> None: ...

    def on_fit_end(self, trainer: "Trainer", task: "Task") -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def is_better(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` improves on ``best`` by more than ``min_delta`` (``mode``: min/max)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _check_mode(mode: str) -> str:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def _monitored(metrics: dict, monitor: str, who: str) -> float:
    if monitor not in metrics:
        raise KeyError(f"{who}: monitored metric '{monitor}' not in this epoch's metrics "
                       f"{sorted(metrics)}")
    return float(metrics[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``patience=2`` and ``val_loss`` of 1.0, 0.8, 0.9, 0.85, training stops after epoch 4:
    the best epoch was 2 and epochs 3 and 4 did not improve on it.
    """

    order = 10

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.monitor, self.mode = monitor, _check_mode(mode)
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer, task, metrics):
        value = _monitored(metrics, self.monitor, "EarlyStopping")
        if is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.epoch
            trainer.should_stop = True
            trainer.log(f"early stopping: no improvement of {self.monitor} for {self.patience} epochs "
                        f"(best {self.best:.4f})")

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state):
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state["stopped_epoch"]


class HistoryCSV(Callback):
    """Write ``trainer.history`` (one row per epoch) to ``history.csv`` after every epoch."""

    order = 20

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_epoch_end(self, trainer, task, metrics):
        if trainer.dist.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(trainer.history).to_csv(self.path, index=False)


class ModelCheckpoint(Callback):
    """Save ``last.pt`` every epoch and ``best.pt`` whenever ``monitor`` improves.

    Both are full checkpoints (model, optimisers, schedulers, grad scaler, epoch, RNG
    state, history, callback state), so either can be resumed with ``--resume``. Only rank 0
    writes.
    """

    order = 100

    def __init__(self, dirpath: str | os.PathLike, monitor: str | None = "val_loss", mode: str = "min",
                 save_last: bool = True):
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, _check_mode(mode)
        self.save_last = save_last
        self.best: float | None = None
        self.best_epoch: int | None = None

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.pt"

    def on_epoch_end(self, trainer, task, metrics):
        improved = False
        if self.monitor is not None:
            value = _monitored(metrics, self.monitor, "ModelCheckpoint")
            if is_better(value, self.best, self.mode):
                self.best, self.best_epoch, improved = value, trainer.epoch, True
        if not trainer.dist.is_main:
            return
        if improved:
            trainer.save_checkpoint(self.best_path)
        if self.save_last:
            trainer.save_checkpoint(self.last_path)

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]
