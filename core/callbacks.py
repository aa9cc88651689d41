"""Callbacks: small objects the :class:`core.trainer.Trainer` calls at fixed points.

Hooks, in the order a run meets them: ``on_fit_start``, then per epoch
``on_train_epoch_start``, ``on_train_batch_end`` (after each training batch and its
optimiser step, if any), ``on_validation_start`` / ``on_validation_end`` (around the
validation pass), ``on_epoch_end``; ``on_fit_end`` last. ``on_save_checkpoint`` may add
entries to a checkpoint being written, ``on_load_checkpoint`` reads them back on resume.

Each has ``state_dict``/``load_state_dict`` so a resumed run continues exactly where it
stopped (the early-stopping counter, the best score so far); the state is saved under the
callback's ``state_key`` (its class name unless set), so adding or removing a callback on
resume does not hand one callback's state to another. Callbacks run in ascending ``order``:
:class:`ModelCheckpoint` after the others, so the checkpoint it writes holds their updated
state, and :class:`HistoryCSV` after the checkpoint, so history.csv never lists an epoch whose
checkpoint is not on disk.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from .checkpoint import task_named_parameters, task_state_dict

if TYPE_CHECKING:  # pragma: no cover (annotations only: no import at run time)
    from .trainer import Task, Trainer

_clock = time.perf_counter  # the time budget's clock (tests replace it)


class Callback:
    """Base class. Override what you need; every hook receives the trainer."""

    order = 50

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint: the class name (override to run two
        callbacks of one class)."""
        return type(self).__name__

    def on_fit_start(self, trainer: "Trainer", task: "Task") -> None: ...

    def on_train_epoch_start(self, trainer: "Trainer", task: "Task") -> None: ...

    def on_train_batch_end(self, trainer: "Trainer", task: "Task", outputs: dict, batch, batch_index: int) -> None:
        """After a training batch (and the optimiser step it completed, if any); ``outputs``
        are the detached values ``training_step`` returned."""

    def on_validation_start(self, trainer: "Trainer", task: "Task") -> None: ...

    def on_validation_end(self, trainer: "Trainer", task: "Task", metrics: dict) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", task: "Task", metrics: dict) -> None: ...

    def on_fit_end(self, trainer: "Trainer", task: "Task") -> None: ...

    def on_save_checkpoint(self, trainer: "Trainer", task: "Task", checkpoint: dict) -> None: ...

    def on_load_checkpoint(self, trainer: "Trainer", task: "Task", checkpoint: dict) -> None: ...

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
    the best epoch was 2 and epochs 3 and 4 did not improve on it. Added on resume to a run
    that had none, it starts from the run's history (best so far, epochs since).
    """

    order = 10

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 5, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.monitor, self.mode = monitor, _check_mode(mode)
        self.patience, self.min_delta = patience, min_delta
        self.best: float | None = None
        self.wait = 0
        self._restored = False

    def on_fit_start(self, trainer, task):
        if self._restored or not trainer.history:
            return
        for row in trainer.history:  # resumed without saved state: replay the history
            if is_better(row.get(self.monitor), self.best, self.mode, self.min_delta):
                self.best, self.wait = row[self.monitor], 0
            else:
                self.wait += 1

    def on_epoch_end(self, trainer, task, metrics):
        value = _monitored(metrics, self.monitor, "EarlyStopping")
        if is_better(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            trainer.log(f"early stopping: no improvement of {self.monitor} for {self.patience} epochs "
                        f"(best {self.best:.4f})")

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]
        self._restored = True


class HistoryCSV(Callback):
    """Write ``trainer.history`` (one row per epoch) to ``history.csv`` after every epoch,
    after the checkpoint, atomically (a temporary file, then ``os.replace``)."""

    order = 110

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_epoch_end(self, trainer, task, metrics):
        if trainer.dist.is_main:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            pd.DataFrame(trainer.history).to_csv(tmp, index=False)
            os.replace(tmp, self.path)


class ModelCheckpoint(Callback):
    """Save ``last.pt`` every epoch and ``best.pt`` whenever ``monitor`` improves.

    Both are full checkpoints (model, optimisers, schedulers, grad scaler, epoch, RNG
    state, history, callback state), so either can be resumed with ``--resume``. Only rank 0
    writes. With ``monitor=None`` only ``last.pt`` is written.
    """

    order = 100

    def __init__(self, dirpath: str | os.PathLike, monitor: str | None = "val_loss", mode: str = "min"):
        self.dirpath = Path(dirpath)
        self.monitor, self.mode = monitor, _check_mode(mode)
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
        trainer.save_checkpoint(self.last_path)

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class EMA(Callback):
    """An exponential moving average of the task's weights, used for validation and saved.

    After every optimiser step, each trainable floating-point parameter's average is updated
    as ``avg = decay * avg + (1 - decay) * param`` (Polyak averaging; the form used for the
    "EMA of weights" in e.g. Karras et al. 2018, progressive GANs, and timm's ``ModelEma``),
    starting from the weights at the start of ``fit``. Validation runs with the averages in
    place (buffers such as batch-norm statistics are the live ones), so ``val_*`` metrics,
    ``best.pt`` and early stopping judge the averaged model. Checkpoints keep the trained
    weights under ``"task"`` (resume continues them exactly) and the averaged ones under
    ``"ema"``; :func:`core.trainer.load_checkpoint` loads the averaged ones by default.

    Args:
        decay: weight of the old average per step (0.999 for long runs; about
            ``1 - 1/steps_of_interest``).
    """

    order = 30

    def __init__(self, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.averages: dict[str, torch.Tensor] = {}
        self._params: dict[str, torch.nn.Parameter] = {}
        self._stepped = -1
        self._backup: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer, task):
        self._params = {name: p for name, p in task_named_parameters(task)
                        if p.requires_grad and p.is_floating_point()}
        restored = self.averages  # from a resumed checkpoint, else empty
        self.averages = {name: restored[name].to(p.device) if name in restored else p.detach().clone()
                         for name, p in self._params.items()}
        self._stepped = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        if trainer.global_step == self._stepped:  # no optimiser step in this batch (accumulating)
            return
        self._stepped = trainer.global_step
        averages = [self.averages[name] for name in self._params]
        torch._foreach_lerp_(averages, [p.detach() for p in self._params.values()], 1.0 - self.decay)
        self.updates += 1

    @torch.no_grad()
    def on_validation_start(self, trainer, task):
        self._backup = {name: p.detach().clone() for name, p in self._params.items()}
        for name, p in self._params.items():
            p.copy_(self.averages[name])

    @torch.no_grad()
    def on_validation_end(self, trainer, task, metrics):
        for name, p in self._params.items():
            p.copy_(self._backup[name])
        self._backup = {}

    def averaged_state_dict(self, task) -> dict:
        """The task's state dict with the averaged parameters in place of the trained ones."""
        return {key: self.averages.get(key, value) for key, value in task_state_dict(task).items()}

    def on_save_checkpoint(self, trainer, task, checkpoint):
        checkpoint["ema"] = self.averaged_state_dict(task)

    def on_load_checkpoint(self, trainer, task, checkpoint):
        if "ema" in checkpoint:
            self.averages = {k: v.detach().clone() for k, v in checkpoint["ema"].items()}

    def state_dict(self):  # the decay is the constructor's: a resume may change it
        return {"updates": self.updates}

    def load_state_dict(self, state):
        self.updates = state["updates"]


class TimeBudget(Callback):
    """End the fit within ``minutes`` of its start, and fit the epochs to that budget.

    At each epoch's end the number of epochs is set to what fits in the time left, from the
    median of the last three epochs' wall times (start to start, so validation and checkpoints
    count), and length-dependent LR schedules (``OneCycleLR``, ``CosineAnnealingLR``) are
    resized to match. Without such a schedule the plan follows the clock both ways. With one it
    may grow as well as shrink after each of the first two epochs (the first carries one-time
    costs) and while half of the budget is left, so that a slow start (a busy machine, a first
    epoch's warm-up) does not leave the budget unused; after that it only shrinks, so that the
    schedule's decay never jumps back up late in the run. After each training batch, if one
    more batch as long as the last one, then the epoch's validation and checkpoints (as long as
    the previous epoch's), would end past the deadline, the epoch ends there and the run ends
    as a normal one does.

    Under DDP rank 0's clock decides both and broadcasts the decision, so every process plans
    the same epochs and stops after the same batch (their clocks and speeds may differ).
    """

    order = 20  # before ModelCheckpoint, which saves the plan

    def __init__(self, minutes: float):
        if not minutes > 0:
            raise ValueError(f"time budget must be > 0 minutes, got {minutes}")
        self.minutes = minutes
        self.deadline: float | None = None
        self._epoch_starts: list[float] = []
        self._batch_end: float | None = None
        self._batch_seconds = 0.0
        self._train_end: float | None = None
        self._tail_seconds = 0.0  # what an epoch spends after its training batches
        self._said_plan: int | None = None

    def on_fit_start(self, trainer, task):
        self.deadline = _clock() + 60.0 * self.minutes
        self._epoch_starts = []
        self._said_plan = None

    def on_train_epoch_start(self, trainer, task):
        now = _clock()
        self._epoch_starts.append(now)
        if self._train_end is not None:
            self._tail_seconds = now - self._train_end
        self._batch_end = now

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        now = _clock()
        self._batch_seconds = now - self._batch_end
        self._batch_end = self._train_end = now
        out_of_time = now + self._batch_seconds + self._tail_seconds > self.deadline
        if trainer.broadcast(float(out_of_time)) > 0.5:
            trainer.log(f"time limit: the budget of {self.minutes:.1f} min ends after {batch_index + 1} batches "
                        f"of epoch {trainer.epoch + 1} (time kept for validation and checkpoints); ending the run")
            trainer.should_stop = True

    def on_epoch_end(self, trainer, task, metrics):
        if trainer.should_stop:
            return
        now = _clock()
        window = self._epoch_starts[-3:] + [now]
        recent = [b - a for a, b in zip(window, window[1:])]
        epoch_seconds = sorted(recent)[len(recent) // 2]
        remaining = self.deadline - now
        fitted = trainer.epoch + max(0, math.floor(0.95 * remaining / epoch_seconds))
        early = len(self._epoch_starts) <= 2 or remaining > 0.5 * 60.0 * self.minutes
        grow = early or not trainer.schedulers
        planned = int(trainer.broadcast(fitted if grow else min(trainer.max_epochs, fitted)))
        if planned != trainer.max_epochs:
            # said when the plan first changes and when it moves by a tenth since it was last said
            said = self._said_plan
            if said is None or abs(planned - said) > 0.1 * said:
                follows = "; the LR schedule follows" if trainer.schedulers else ""
                trainer.log(f"time limit: {planned} epochs fit in {self.minutes:.1f} min "
                            f"({epoch_seconds:.1f} s per epoch, {remaining / 60:.1f} min left){follows}")
                self._said_plan = planned
            trainer.max_epochs = planned
            trainer.resize_schedules()

