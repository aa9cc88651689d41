"""One training loop for every homework.

A homework describes *what* to learn in a :class:`Task`; the :class:`Trainer` decides *how*:
device, mixed precision, gradient accumulation and clipping, LR schedules, validation,
checkpoints, resume, early stopping, progress bars and DDP. A minimal task::

    class Classify(Task):
        def __init__(self, model, lr):
            super().__init__()
            self.model, self.lr = model, lr

        def training_step(self, batch):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def validation_step(self, batch):
            x, y = batch
            logits = self.model(x)
            return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float()}

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    Trainer(max_epochs=5, run_dir="runs/demo/x", monitor="val_acc", mode="max").fit(task, train_dl, val_dl)

``training_step`` returns the loss, or a dict with ``"loss"`` and other numbers to log.
``validation_step`` returns a dict of numbers: a scalar is taken as the batch mean, a 1-D
tensor as per-sample values; the Trainer averages them over the whole validation set (and
over all processes under DDP) and logs them as ``val_<name>``. ``on_validation_epoch_end``
may return whole-set metrics (ROC-AUC); under DDP each process's value is averaged,
weighted by its number of validation samples, so gather first (``self.trainer.all_gather``)
for a metric that is not a mean.

``configure_optimizers`` returns an optimiser, or a dict ``{"optimizer": opt, "scheduler":
sched, "interval": "epoch" | "step", "monitor": "val_loss"}`` (``monitor`` for
``ReduceLROnPlateau``), or a list of those (several optimisers). It is called inside
``fit``, once the training loader is known, so a schedule can be sized with
``self.trainer.estimated_stepping_batches`` (optimiser steps of the whole run: processes,
``limit_batches``, ``accumulate`` and epochs accounted for).

What a task can read while it trains (read-only): ``self.trainer``, ``self.current_epoch``
(0-based index of the epoch being trained), ``self.global_step`` (optimiser steps taken).

Tasks that optimise in their own way (a GAN's alternating discriminator and generator
updates) set ``automatic_optimization = False``; their ``training_step`` gets the optimisers
from ``self.optimizers()`` and calls ``self.manual_step(optimizer, loss)`` for each update.
``manual_step`` zeroes that optimiser's gradients before the backward pass (so gradients a
generator loss left on the discriminator never reach the discriminator's update), checks
that the loss is finite, and gets AMP loss scaling, gradient clipping and step-wise
schedulers. ``accumulate > 1`` is refused for such tasks.

Callbacks (:mod:`core.callbacks`) are called at ``on_fit_start``, ``on_train_epoch_start``,
``on_train_batch_end``, ``on_validation_start``, ``on_validation_end``, ``on_epoch_end``,
``on_save_checkpoint``, ``on_load_checkpoint`` and ``on_fit_end``; their state is saved in
checkpoints under their ``state_key`` (the class name by default), never by position.

``monitor="auto"`` (the default) is ``val_loss`` when ``fit`` gets a validation loader and
``None`` otherwise (only ``last.pt`` is written, no early stopping).

Checkpoints hold tensors and plain Python values only, and are read with
``torch.load(weights_only=True)``: a file that would run code when loaded is refused, and so
are a missing file and a checkpoint of another model (:class:`core.errors.UserError`, one line
naming the file). A resume continues the same run: changed optimiser settings (``--lr``, ...)
are refused, and so are ``--epochs`` or batch options that no longer match an LR schedule
sized to the run; ``--patience``, ``--device``, ``--threads``, ``--num-workers`` may change.
``history.csv`` is written after the epoch's checkpoint, atomically. Ctrl-C during ``fit``
prints the last checkpoint and the command that resumes from it.

``time_limit`` (``--time-limit MINUTES``) adds a :class:`core.callbacks.TimeBudget`: the number
of epochs, and the length of a ``OneCycleLR`` or ``CosineAnnealingLR``, are fitted to the budget
from the measured epoch time, and the run ends inside it, saving as a normal end does. Under
DDP rank 0 decides and broadcasts, so every process trains the same batches.

Under DDP (``torchrun``) each process reads its shard (a user's sampler, e.g.
``WeightedRandomSampler``, is sharded, not replaced); parameters registered on the task
itself are refused (DDP could not synchronise them).
"""
from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler
from tqdm.auto import tqdm

from .callbacks import Callback, EarlyStopping, HistoryCSV, ModelCheckpoint, TimeBudget
from .checkpoint import load_checkpoint, load_task_weights, save_atomic, task_state_dict
from .device import (DistInfo, autocast, autocast_dtype, barrier, dist_info, init_distributed, pick_device,
                     rng_state, seed_everything, set_rng_state)
from .errors import UserError


class Task(nn.Module):
    """What a homework trains. Subclass it; its sub-modules are saved in checkpoints."""

    #: set to False to call :meth:`manual_step` yourself inside ``training_step``
    automatic_optimization: bool = True

    def __init__(self):
        super().__init__()
        self._trainer: Trainer | None = None

    def training_step(self, batch):
        raise NotImplementedError(f"{type(self).__name__} must define training_step(batch)")

    def validation_step(self, batch) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define validation_step(batch)")

    def configure_optimizers(self):
        raise NotImplementedError(f"{type(self).__name__} must define configure_optimizers()")

    def on_validation_epoch_end(self) -> dict:
        """Extra validation metrics computed over the whole epoch (e.g. ROC-AUC); optional."""
        return {}

    def batch_size(self, batch) -> int:
        """Number of samples in ``batch`` (used to weight per-batch means)."""
        first = batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values())) \
            if isinstance(batch, Mapping) else batch
        return len(first)

    # -- what the task may read while it trains ------------------------------------------------
    @property
    def trainer(self) -> "Trainer":
        """The Trainer fitting this task (``RuntimeError`` outside ``fit``)."""
        return self._require_trainer()

    @property
    def current_epoch(self) -> int:
        """0-based index of the epoch being trained (epochs completed before it); 0 outside fit."""
        return self._trainer.epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimiser steps taken so far (of the first optimiser); 0 outside fit."""
        return self._trainer.global_step if self._trainer is not None else 0

    # -- manual optimisation ------------------------------------------------------------------
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers from :meth:`configure_optimizers`, in order (during ``fit`` only)."""
        return self._require_trainer().optimizers

    def manual_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Zero ``optimizer``'s gradients, backward ``loss``, then step ``optimizer`` with the
        Trainer's scaler and clipping (see :meth:`Trainer.manual_step`)."""
        self._require_trainer().manual_step(optimizer, loss)

    def _require_trainer(self) -> "Trainer":
        if self._trainer is None:
            raise RuntimeError("this task is not attached to a Trainer (call Trainer.fit first)")
        return self._trainer


def move_to_device(batch, device: torch.device, non_blocking: bool = False):
    """Move every tensor in a (nested) tuple, list or dict to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    return batch


class _OptimizerSetup:
    """The parsed result of ``Task.configure_optimizers``."""

    def __init__(self, config):
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[dict] = []  # {"scheduler", "interval", "monitor"}
        items = config if isinstance(config, (list, tuple)) else [config]
        for item in items:
            if isinstance(item, torch.optim.Optimizer):
                self.optimizers.append(item)
                continue
            if not isinstance(item, Mapping) or "optimizer" not in item:
                raise TypeError("configure_optimizers must return an optimizer, a dict with 'optimizer' "
                                f"(and optional 'scheduler', 'interval', 'monitor'), or a list of those; got {item!r}")
            self.optimizers.append(item["optimizer"])
            if item.get("scheduler") is not None:
                interval = item.get("interval", "epoch")
                if interval not in ("epoch", "step"):
                    raise ValueError(f"scheduler interval must be 'epoch' or 'step', got {interval!r}")
                self.schedulers.append({"scheduler": item["scheduler"], "interval": interval,
                                        "monitor": item.get("monitor")})


class _ShardedSampler(Sampler):
    """A user's sampler (e.g. ``WeightedRandomSampler``) under DDP: every process draws the
    same index sequence (the global RNG forked and seeded by seed and epoch) and keeps every
    ``world_size``-th index, padded so that all processes take the same number of batches."""

    def __init__(self, sampler: Sampler, rank: int, world_size: int, seed: int):
        self.sampler, self.rank, self.world_size, self.seed, self.epoch = sampler, rank, world_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.world_size)

    def __iter__(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.epoch)
            indices = list(self.sampler)
        indices += indices[:len(self) * self.world_size - len(indices)]
        return iter(indices[self.rank::self.world_size])


class Trainer:
    """Fits a :class:`Task`. See the module docstring for the task protocol.

    Args:
        max_epochs: number of epochs.
        run_dir: where ``history.csv``, ``best.pt`` and ``last.pt`` go (``None``: nothing written).
        monitor / mode: the metric that decides ``best.pt`` and early stopping (e.g. ``val_iou``,
            ``max``). ``"auto"``: ``val_loss`` with a validation loader, else ``None``.
        patience: early-stopping patience in epochs (``None``: no early stopping).
        device: ``"auto"`` (cuda > mps > cpu) or a device string.
        precision: ``"auto"``, ``"32"``, ``"bf16"`` or ``"16"`` (see :func:`core.device.autocast_dtype`).
        grad_clip: max gradient norm (``None``: no clipping).
        accumulate: number of batches whose gradients are summed before one optimiser step;
            each loss is divided by the number of batches in its group, so ``k`` batches of
            size ``b`` give the same update as one batch of ``k*b``.
        limit_batches: at most this many train and validation batches per epoch.
        seed / deterministic: seeding and deterministic kernels, applied in ``fit``.
        callbacks: extra :class:`~core.callbacks.Callback` objects.
        progress: show tqdm bars; default only on an interactive terminal outside CI.
        time_limit: minutes ``fit`` may take, counted from its start: a
            :class:`~core.callbacks.TimeBudget` fits the number of epochs (and the length of
            ``OneCycleLR``/``CosineAnnealingLR`` schedules) to it and ends the run inside it;
            ``max_epochs`` then only sizes the first epoch's schedule. Under DDP rank 0's clock
            decides and every process follows.

    Building a Trainer has no effect outside it: the process group is joined (under
    ``torchrun``) when ``fit`` starts, and PyTorch's thread count is the caller's to set.
    """

    def __init__(self, max_epochs: int = 10, run_dir: str | os.PathLike | None = None,
                 monitor: str | None = "auto", mode: str = "min", patience: int | None = None,
                 device: str = "auto", precision: str = "auto", grad_clip: float | None = None,
                 accumulate: int = 1, limit_batches: int | None = None, seed: int | None = 42,
                 deterministic: bool = False, callbacks: Iterable[Callback] = (),
                 progress: bool | None = None, log_every_epoch: bool = True, time_limit: float | None = None):
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        if patience is not None and monitor is None:
            raise ValueError("patience needs a monitored metric: give monitor (e.g. 'val_loss')")
        self.max_epochs = max_epochs
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.monitor, self.mode = monitor, mode
        self.grad_clip, self.accumulate, self.limit_batches = grad_clip, accumulate, limit_batches
        self.seed, self.deterministic = seed, deterministic
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 minutes, got {time_limit}")
        self.time_limit = time_limit
        self.device = pick_device(device)
        self.dist: DistInfo = dist_info()  # from torchrun's environment; the group is joined in fit
        self.amp_dtype = autocast_dtype(precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.progress = progress if progress is not None else (
            sys.stderr.isatty() and not os.environ.get("CI") and self.dist.is_main)
        self.log_every_epoch = log_every_epoch

        self.callbacks: list[Callback] = list(callbacks)
        self._monitoring: list[Callback] = []  # built-in callbacks that follow self.monitor
        if patience is not None:
            self._monitoring.append(EarlyStopping(monitor, mode, patience))
        if time_limit is not None:
            self.callbacks.append(TimeBudget(time_limit))
        if self.run_dir is not None:
            self.callbacks.append(HistoryCSV(self.run_dir / "history.csv"))
            self._monitoring.append(ModelCheckpoint(self.run_dir, monitor, mode))
        self.callbacks += self._monitoring
        self.callbacks.sort(key=lambda cb: cb.order)
        keys = [cb.state_key for cb in self.callbacks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"callbacks share a state_key ({keys}): give each a distinct state_key")

        self.epoch = 0          # epochs completed
        self.global_step = 0    # optimiser steps taken
        self.history: list[dict] = []
        self.should_stop = False
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[dict] = []
        self.task: Task | None = None
        self.train_loader: DataLoader | None = None
        self._scaler_stepped = False
        self._batch_index = 0
        self._optimizer_settings: list[list[dict]] = []

    # -- public API ---------------------------------------------------------------------------
    def fit(self, task: Task, train_loader: DataLoader, val_loader: DataLoader | None = None,
            resume: str | os.PathLike | None = None) -> list[dict]:
        """Train ``task``; returns the history (one dict of metrics per epoch).

        Ctrl-C prints where the last checkpoint is and the command that resumes from it,
        then raises ``KeyboardInterrupt`` again (``core.cli.run_command`` exits with 130).
        """
        self.dist = init_distributed(self.device)
        if self.seed is not None:
            seed_everything(self.seed, self.deterministic)
        self._attach(task, val_loader)
        if self.dist.enabled:
            train_loader = self._distributed_loader(train_loader)
            val_loader = self._distributed_loader(val_loader) if val_loader is not None else None
        self.train_loader = train_loader
        setup = _OptimizerSetup(task.configure_optimizers())
        self.optimizers, self.schedulers = setup.optimizers, setup.schedulers
        self._optimizer_settings = _optimizer_settings(self.optimizers)
        if resume is not None:
            self._restore(resume)
        if self.dist.enabled:
            self._wrap_ddp(task)
        for cb in self.callbacks:
            cb.on_fit_start(self, task)
        try:
            while self.epoch < self.max_epochs and not self.should_stop:
                self._run_epoch(task, train_loader, val_loader)
        except KeyboardInterrupt:
            self._report_interrupt()
            raise
        finally:
            self._unwrap_ddp(task)
        for cb in self.callbacks:
            cb.on_fit_end(self, task)
        barrier()  # rank 0's checkpoints are on disk before any process reads them
        return self.history

    @property
    def estimated_stepping_batches(self) -> int:
        """Optimiser steps the whole run takes: ``max_epochs`` x ceil(batches per epoch on this
        process, capped by ``limit_batches``, / ``accumulate``). Known once ``fit`` has the
        training loader (so inside ``configure_optimizers``); under DDP it counts the batches
        of this process's shard, which is what each process steps."""
        if self.train_loader is None:
            raise RuntimeError("estimated_stepping_batches is known once fit() has the training loader "
                               "(read it in configure_optimizers)")
        per_epoch = self._num_batches(self.train_loader)
        return max(1, self.max_epochs * math.ceil(per_epoch / self.accumulate))

    @property
    def best_score(self) -> float | None:
        """Best value of ``monitor`` so far (from the checkpoint callback)."""
        for cb in self.callbacks:
            if isinstance(cb, ModelCheckpoint):
                return cb.best
        return None

    @property
    def best_checkpoint(self) -> Path | None:
        for cb in self.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.best_path.is_file():
                return cb.best_path
        return None

    @property
    def last_checkpoint(self) -> Path | None:
        for cb in self.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.last_path.is_file():
                return cb.last_path
        return None

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every process (``value`` itself when not distributed): for a
        decision every process must share, such as stopping after this batch."""
        if not self.dist.enabled:
            return value
        box = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.broadcast(box, src=0)
        return box.item()

    def resize_schedules(self) -> None:
        """Fit length-dependent LR schedules (:func:`resize_schedule`) to ``max_epochs``, after
        a callback changed it."""
        for sched in self.schedulers:
            total = self.estimated_stepping_batches if sched["interval"] == "step" else self.max_epochs
            resize_schedule(sched["scheduler"], total)

    def log(self, message: str) -> None:
        """Print on rank 0 only (tqdm-safe)."""
        if self.dist.is_main:
            tqdm.write(message) if self.progress else print(message, flush=True)

    def log_image(self, tag: str, image) -> None:
        """Send ``image`` under ``tag``, at the current epoch, to every callback that logs
        images (``core.loggers.TensorBoardLogger``); nothing without one. ``image``: a PIL
        image, an array, a tensor, a matplotlib figure or an image file (see
        :func:`core.loggers.image_array`)."""
        for cb in self.callbacks:
            if callable(getattr(cb, "log_image", None)):
                cb.log_image(tag, image, step=self.epoch)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` of every process concatenated along dim 0 (``tensor`` itself when not
        distributed); the processes may hold different numbers of rows."""
        if not self.dist.enabled:
            return tensor
        tensor = tensor.detach().to(self.device).contiguous()
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.dist.world_size)]
        dist.all_gather(sizes, torch.tensor([len(tensor)], device=self.device))
        padded = tensor.new_zeros((max(int(s) for s in sizes), *tensor.shape[1:]))
        padded[:len(tensor)] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:int(n)] for part, n in zip(parts, sizes)])

    def manual_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One update of ``optimizer`` from ``loss`` alone: check that the loss is finite, zero
        the optimiser's gradients (another loss's backward may have left some on its
        parameters, e.g. a generator loss on the discriminator), backward, then
        :meth:`optimizer_step`."""
        self._check_finite(loss)
        optimizer.zero_grad(set_to_none=True)
        self.optimizer_step(optimizer, loss)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor | None,
                       scale: float = 1.0, step: bool = True) -> None:
        """Backward ``loss * scale``; if ``step``, unscale, clip, step, zero the gradients and
        advance step-wise schedulers of this optimiser. The AMP scaler is updated once per
        batch, after every optimiser of the batch has stepped."""
        if loss is not None:
            self.scaler.scale(loss * scale).backward()
        if not step:
            return
        if self.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(optimizer)
        self._scaler_stepped = True
        optimizer.zero_grad(set_to_none=True)
        if optimizer is self.optimizers[0]:
            self.global_step += 1
        for sched in self.schedulers:
            if sched["interval"] == "step" and sched["scheduler"].optimizer is optimizer:
                sched["scheduler"].step()

    # -- set-up -------------------------------------------------------------------------------
    def _attach(self, task: Task, val_loader: DataLoader | None) -> None:
        """Check the task against the options, resolve ``monitor`` and move the task."""
        if not task.automatic_optimization and self.accumulate > 1:
            raise UserError(f"--accumulate {self.accumulate}: not supported for a task that makes its own "
                            "optimiser steps (automatic_optimization = False); use a larger --batch-size")
        if self.monitor == "auto":
            self.monitor = "val_loss" if val_loader is not None else None
        if val_loader is None and self.monitor is not None and self.monitor.startswith("val_"):
            raise UserError(f"monitor '{self.monitor}' needs a validation loader: pass one to fit(), or "
                            "monitor a train_* metric, or monitor=None (last.pt only)")
        for cb in self._monitoring:
            if isinstance(cb, EarlyStopping) and self.monitor is None:
                raise UserError("--patience needs a validation loader (or a monitored train_* metric)")
            cb.monitor = self.monitor
        self.task = task
        task._trainer = self
        task.to(self.device)

    # -- one epoch ----------------------------------------------------------------------------
    def _run_epoch(self, task: Task, train_loader: DataLoader, val_loader: DataLoader | None) -> None:
        epoch = self.epoch + 1
        start = time.perf_counter()
        sampler = getattr(train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for cb in self.callbacks:
            cb.on_train_epoch_start(self, task)
        metrics = {f"train_{k}": v for k, v in self._train_epoch(task, train_loader, epoch).items()}
        if val_loader is not None:
            for cb in self.callbacks:
                cb.on_validation_start(self, task)
            val_metrics = {f"val_{k}": v for k, v in self._validate(task, val_loader).items()}
            for cb in self.callbacks:
                cb.on_validation_end(self, task, val_metrics)
            metrics.update(val_metrics)
        for i, opt in enumerate(self.optimizers):
            metrics["lr" if i == 0 else f"lr{i}"] = opt.param_groups[0]["lr"]
        for sched in self.schedulers:
            if sched["interval"] == "epoch":
                if sched["monitor"] is not None:
                    sched["scheduler"].step(metrics[sched["monitor"]])
                else:
                    sched["scheduler"].step()
        self.epoch = epoch
        row = {"epoch": epoch, **metrics, "time": round(time.perf_counter() - start, 3)}
        self.history.append(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, task, metrics)
        if self.log_every_epoch:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if not k.startswith("lr"))
            self.log(f"epoch {epoch}/{self.max_epochs}  {shown}  ({row['time']:.1f}s)")

    def _num_batches(self, loader: DataLoader) -> int:
        n = len(loader)
        return min(n, self.limit_batches) if self.limit_batches is not None else n

    def _train_epoch(self, task: Task, loader: DataLoader, epoch: int) -> dict:
        task.train()
        n_batches = self._num_batches(loader)
        if n_batches == 0:
            raise ValueError("the training loader is empty (no batches): check the dataset size and batch size")
        batch_hooks = [cb for cb in self.callbacks if type(cb).on_train_batch_end is not Callback.on_train_batch_end]
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{self.max_epochs}", leave=False,
                   disable=not self.progress, dynamic_ncols=True)
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            self._batch_index = i
            batch = move_to_device(batch, self.device)
            if task.automatic_optimization:
                logs = self._automatic_step(task, batch, i, n_batches)
            else:
                with autocast(self.device, self.amp_dtype):
                    logs = _as_logs(task.training_step(batch), require_loss=False)
                logs = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}
            if self._scaler_stepped:  # once per batch, whatever the number of optimisers
                self.scaler.update()
                self._scaler_stepped = False
            for cb in batch_hooks:
                cb.on_train_batch_end(self, task, logs, batch, i)
            n = task.batch_size(batch)
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            count += n
            bar.update(1)
            if "loss" in logs:
                bar.set_postfix(loss=f"{float(logs['loss']):.4f}")
            if self.should_stop:  # a callback (the time budget) ended the run after this batch
                break
        bar.close()
        return self._reduce(sums, count)

    def _automatic_step(self, task: Task, batch, index: int, n_batches: int) -> dict:
        group_start = (index // self.accumulate) * self.accumulate
        group_size = min(self.accumulate, n_batches - group_start)
        is_last_in_group = index == group_start + group_size - 1
        with self._no_sync(task, not is_last_in_group):
            with autocast(self.device, self.amp_dtype):
                logs = _as_logs(task.training_step(batch), require_loss=True)
            loss = logs["loss"]
            self._check_finite(loss)
            self.scaler.scale(loss if group_size == 1 else loss / group_size).backward()
        if is_last_in_group:
            for opt in self.optimizers:
                self.optimizer_step(opt, None)
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}

    def _check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {self.epoch + 1}, batch {self._batch_index}: "
                                     "lower the learning rate or check the data")

    @torch.no_grad()
    def _validate(self, task: Task, loader: DataLoader) -> dict:
        task.eval()
        n_batches = self._num_batches(loader)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        samples = 0
        bar = tqdm(total=n_batches, desc="validate", leave=False, disable=not self.progress, dynamic_ncols=True)
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            batch = move_to_device(batch, self.device)
            with autocast(self.device, self.amp_dtype):
                out = task.validation_step(batch)
            if not isinstance(out, Mapping):
                raise TypeError(f"validation_step must return a dict of metrics, got {type(out).__name__}")
            n = task.batch_size(batch)
            samples += n
            for key, value in out.items():
                value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                if value.dim() == 0:
                    total, k = float(value) * n, n
                else:
                    total, k = float(value.sum()), value.numel()
                sums[key] = sums.get(key, 0.0) + total
                counts[key] = counts.get(key, 0) + k
            bar.update(1)
        bar.close()
        metrics = {key: self._reduce({key: sums[key]}, counts[key])[key] for key in sums}
        # whole-set metrics: each process's value, weighted by its number of validation samples
        extra = {k: float(v) * samples for k, v in task.on_validation_epoch_end().items()}
        metrics.update(self._reduce(extra, samples) if extra else {})
        return metrics

    def _reduce(self, sums: dict, count: int) -> dict:
        """Turn per-process sums into means over all samples of all processes."""
        keys = sorted(sums)
        values = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64)
        if self.dist.enabled:
            values = values.to(self.device)
            dist.all_reduce(values)
            values = values.cpu()
        total = values[-1].item()
        return {k: values[i].item() / total if total else math.nan for i, k in enumerate(keys)}

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint_state(self) -> dict:
        """Everything needed to continue this run exactly, as tensors and plain Python values
        (readable with ``torch.load(weights_only=True)``)."""
        state = {
            "task": task_state_dict(self.task),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [s["scheduler"].state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "max_epochs": self.max_epochs,
            "history": [dict(row) for row in self.history],
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks},
            "rng": rng_state(),
            "monitor": self.monitor,
            "best_score": self.best_score,
            "estimated_stepping_batches": self.estimated_stepping_batches if self.train_loader is not None else None,
            "optimizer_settings": self._optimizer_settings,
        }
        for cb in self.callbacks:
            cb.on_save_checkpoint(self, self.task, state)
        return state

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write a full checkpoint atomically (a crash mid-write leaves the old file intact)."""
        return save_atomic(self.checkpoint_state(), path)

    def _restore(self, path: str | os.PathLike) -> None:
        checkpoint = load_checkpoint(path, map_location=self.device)
        load_task_weights(self.task, checkpoint["task"], path)
        self._check_resumable(checkpoint, path)
        for kind, saved, own in (("optimiser", checkpoint["optimizers"], self.optimizers),
                                 ("scheduler", checkpoint["schedulers"], self.schedulers)):
            if len(saved) != len(own):
                raise UserError(f"{path}: has {len(saved)} {kind} state(s), the task configures {len(own)}")
        for opt, state in zip(self.optimizers, checkpoint["optimizers"]):
            opt.load_state_dict(state)
        for sched, state in zip(self.schedulers, checkpoint["schedulers"]):
            sched["scheduler"].load_state_dict(state)
        self._check_schedule_length(checkpoint, path)
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = checkpoint["epoch"]
        self.global_step = checkpoint["global_step"]
        self.history = list(checkpoint["history"])
        saved = checkpoint["callbacks"]
        for cb in self.callbacks:  # by name: adding or removing a callback on resume shifts nothing
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
        for cb in self.callbacks:
            cb.on_load_checkpoint(self, self.task, checkpoint)
        set_rng_state(checkpoint["rng"])
        if self.time_limit is not None:  # the plan fitted to the budget at the run's start
            self.max_epochs = checkpoint.get("max_epochs", self.max_epochs)
        self.log(f"resumed from {path} at epoch {self.epoch}")

    def _check_resumable(self, checkpoint: dict, path) -> None:
        """A resume continues a run: the optimiser settings (``--lr``, weight decay, ...) must be
        the run's (and see :meth:`_check_schedule_length`). ``--epochs`` may change unless an
        LR schedule was sized to the run; ``--patience``, ``--device``, ``--threads`` and
        ``--num-workers`` may always change."""
        saved = checkpoint.get("optimizer_settings")
        if saved is not None and saved != self._optimizer_settings:
            changes = [f"{key} {_short(old.get(key))} -> {_short(new.get(key))}"
                       for old_groups, new_groups in zip(saved, self._optimizer_settings)
                       for old, new in zip(old_groups, new_groups) for key in sorted(set(old) | set(new))
                       if old.get(key) != new.get(key)] or ["parameter groups differ"]
            raise UserError(f"{path}: the run was trained with other optimiser settings ({', '.join(changes[:4])}); "
                            "a resume keeps the run's settings: resume with its options, or start a new run")

    def _check_schedule_length(self, checkpoint: dict, path) -> None:
        """Refuse a resume whose epochs or steps no longer match a schedule sized to the run
        (``OneCycleLR``/``CosineAnnealingLR`` whose length was the run's), or would overrun a
        ``OneCycleLR`` (its "Tried to step" error)."""
        from torch.optim import lr_scheduler as lrs

        saved_epochs = checkpoint.get("max_epochs", self.max_epochs)
        saved_steps = checkpoint.get("estimated_stepping_batches", self.estimated_stepping_batches)
        if self.time_limit is not None or (saved_epochs, saved_steps) == (self.max_epochs, self.estimated_stepping_batches):
            return
        for sched in self.schedulers:
            s, by_step = sched["scheduler"], sched["interval"] == "step"
            length = s.total_steps if isinstance(s, lrs.OneCycleLR) else s.T_max \
                if isinstance(s, lrs.CosineAnnealingLR) else None
            if length is None:
                continue
            if length == (saved_steps if by_step else saved_epochs) or (
                    isinstance(s, lrs.OneCycleLR) and self.estimated_stepping_batches > length):
                raise UserError(f"{path}: its {type(s).__name__} was built for {saved_epochs} epochs "
                                f"({saved_steps} optimiser steps), these options give {self.max_epochs} epochs "
                                f"({self.estimated_stepping_batches} steps); resume with --epochs {saved_epochs} "
                                "and the run's batch options, or start a new run")

    def _report_interrupt(self) -> None:
        """After Ctrl-C: say where the last checkpoint is and how to continue from it."""
        if not self.dist.is_main:
            return
        last = self.last_checkpoint
        if last is None:
            print(f"interrupted in epoch {self.epoch + 1}: no checkpoint written yet, nothing to resume",
                  file=sys.stderr, flush=True)
            return
        print(f"interrupted in epoch {self.epoch + 1}; last checkpoint: {last} (end of epoch "
              f"{self.history[-1]['epoch'] if self.history else '?'})\nresume with: {resume_command(last)}",
              file=sys.stderr, flush=True)

    # -- distributed --------------------------------------------------------------------------
    def _distributed_loader(self, loader: DataLoader) -> DataLoader:
        """The same loader with each process reading its share: a :class:`DistributedSampler`
        for plain (sequential or shuffled) loaders, a shard of the user's own sampler otherwise."""
        if type(loader.batch_sampler) is not BatchSampler:
            raise UserError(f"a DataLoader with its own batch_sampler ({type(loader.batch_sampler).__name__}) "
                            "cannot be sharded across processes: give it a sampler instead")
        if isinstance(loader.sampler, (RandomSampler, SequentialSampler)):
            sampler = DistributedSampler(loader.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                         shuffle=isinstance(loader.sampler, RandomSampler), seed=self.seed or 0,
                                         drop_last=loader.drop_last)
        else:
            sampler = _ShardedSampler(loader.sampler, self.dist.rank, self.dist.world_size, self.seed or 0)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                          worker_init_fn=loader.worker_init_fn,
                          persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False)

    def _wrap_ddp(self, task: Task) -> None:
        """Wrap each trainable sub-module of the task in DDP, so the task's own code is unchanged.

        Parameters registered on the task itself would not be synchronised between processes,
        so they are refused."""
        direct = [name for name, p in task.named_parameters(recurse=False) if p.requires_grad]
        if direct:
            raise UserError(f"{type(task).__name__} registers parameter(s) {', '.join(direct)} on the task "
                            "itself, which DDP cannot synchronise: put them in a sub-module (e.g. an nn.Module "
                            "attribute holding them)")
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        for name, child in list(task.named_children()):
            if any(p.requires_grad for p in child.parameters()) and not isinstance(child, DistributedDataParallel):
                setattr(task, name, DistributedDataParallel(child, device_ids=device_ids))

    def _unwrap_ddp(self, task: Task) -> None:
        for name, child in list(task.named_children()):
            if isinstance(child, DistributedDataParallel):
                setattr(task, name, child.module)

    def _no_sync(self, task: Task, skip_sync: bool):
        """Inside an accumulation group, skip DDP's gradient all-reduce until the last batch."""
        stack = contextlib.ExitStack()
        if skip_sync and self.dist.enabled:
            for child in task.children():
                if isinstance(child, DistributedDataParallel):
                    stack.enter_context(child.no_sync())
        return stack


def _short(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _optimizer_settings(optimizers: list[torch.optim.Optimizer]) -> list[list[dict]]:
    """Each optimiser's hyper-parameters per parameter group, as configured (before any step)."""
    plain = (int, float, bool, str, type(None))
    return [[{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()
              if k != "params" and (isinstance(v, plain) or isinstance(v, tuple) and all(isinstance(x, plain) for x in v))}
             for group in opt.param_groups] for opt in optimizers]


def resize_schedule(scheduler, total: int) -> bool:
    """Stretch or shrink a length-dependent LR schedule to ``total`` steps (or epochs), keeping
    the steps already taken; returns whether ``scheduler`` has a length to change.

    ``OneCycleLR``: its phase boundaries stay at the same fractions of the run (warm-up
    ``pct_start``). ``CosineAnnealingLR``: ``T_max``; its recursive form continues from the
    current LR and reaches ``eta_min`` at the new end.
    """
    from torch.optim import lr_scheduler as lrs

    total = max(int(total), scheduler.last_epoch, 1)
    if isinstance(scheduler, lrs.OneCycleLR):
        old = scheduler.total_steps
        phases = scheduler._schedule_phases
        pct = (phases[0]["end_step"] + 1) / old
        ends = [pct * total - 1, 2 * pct * total - 2, total - 1] if len(phases) == 3 else [pct * total - 1, total - 1]
        for phase, end in zip(phases, ends):
            phase["end_step"] = float(end)
        scheduler.total_steps = total
        with warnings.catch_warnings():  # the LR (and momentum) of the step to come, on the new plan
            warnings.simplefilter("ignore")
            values = scheduler.get_lr()
        for group, lr in zip(scheduler.optimizer.param_groups, values):
            group["lr"] = lr
        scheduler._last_lr = list(values)
        return True
    if isinstance(scheduler, lrs.CosineAnnealingLR):
        scheduler.T_max = total
        return True
    return False


def resume_command(checkpoint: str | os.PathLike, argv: list[str] | None = None) -> str:
    """The command line that continues this run from ``checkpoint``: the current command with
    ``--resume``/``--run-dir``/``--run-name``/``--overwrite`` replaced by ``--run-dir <its folder>
    --resume <checkpoint>``."""
    argv = list(sys.argv if argv is None else argv)
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", argv[0]]
    kept, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--resume", "--run-dir", "--run-name"):
            skip = "=" not in arg
            continue
        if name == "--overwrite":
            continue
        kept.append(arg)
    checkpoint = Path(checkpoint)
    return shlex.join(head + kept + ["--run-dir", str(checkpoint.parent), "--resume", str(checkpoint)])


def _as_logs(output, require_loss: bool) -> dict:
    if isinstance(output, torch.Tensor):
        return {"loss": output}
    if isinstance(output, Mapping):
        if require_loss and "loss" not in output:
            raise KeyError("training_step returned a dict without 'loss'")
        return dict(output)
    if output is None and not require_loss:
        return {}
    raise TypeError(f"training_step must return a loss tensor or a dict with 'loss', got {type(output).__name__}")
