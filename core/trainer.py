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
over all processes under DDP) and logs them as ``val_<name>``.

``configure_optimizers`` returns an optimiser, or a dict ``{"optimizer": opt, "scheduler":
sched, "interval": "epoch" | "step", "monitor": "val_loss"}`` (``monitor`` for
``ReduceLROnPlateau``), or a list of those (several optimisers).

Tasks that optimise in their own way (a GAN's alternating discriminator and generator
updates) set ``automatic_optimization = False``; their ``training_step`` gets the optimisers
from ``self.optimizers()`` and calls ``self.manual_step(optimizer, loss)`` for each update,
which still gets AMP loss scaling, gradient clipping and step-wise schedulers.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from .callbacks import Callback, EarlyStopping, HistoryCSV, ModelCheckpoint
from .device import (DistInfo, autocast, autocast_dtype, barrier, init_distributed, pick_device, rng_state,
                     seed_everything, set_rng_state)


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

    # -- manual optimisation ------------------------------------------------------------------
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers from :meth:`configure_optimizers`, in order (during ``fit`` only)."""
        return self._require_trainer().optimizers

    def manual_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward ``loss`` and step ``optimizer`` with the Trainer's scaler and clipping."""
        self._require_trainer().optimizer_step(optimizer, loss)

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


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def task_state_dict(task: Task) -> dict:
    """The task's weights with DDP wrappers removed, so they load into an unwrapped task."""
    state = {}
    for name, child in task.named_children():
        for key, value in unwrap(child).state_dict().items():
            state[f"{name}.{key}"] = value
    for key, value in task.state_dict().items():  # parameters/buffers registered on the task itself
        if "." not in key:
            state[key] = value
    return state


def load_checkpoint(path: str | os.PathLike, task: Task | None = None, map_location="cpu") -> dict:
    """Read a checkpoint written by the Trainer and, if ``task`` is given, load its weights.

    Checkpoints hold NumPy RNG state and history lists, so they are read with
    ``weights_only=False``: only load checkpoints you (or this project) wrote.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise RuntimeError(f"{path}: cannot read checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or "task" not in checkpoint:
        raise RuntimeError(f"{path}: not a checkpoint written by core.Trainer (no 'task' entry)")
    if task is not None:
        task.load_state_dict(checkpoint["task"])
    return checkpoint


class _OptimizerSetup:
    """The parsed result of ``Task.configure_optimizers``."""

    def __init__(self, config):
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[dict] = []  # {"scheduler", "interval", "monitor", "optimizer_index"}
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


class Trainer:
    """Fits a :class:`Task`. See the module docstring for the task protocol.

    Args:
        max_epochs: number of epochs.
        run_dir: where ``history.csv``, ``best.pt`` and ``last.pt`` go (``None``: nothing written).
        monitor / mode: the metric that decides ``best.pt`` and early stopping (e.g. ``val_iou``, ``max``).
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
    """

    def __init__(self, max_epochs: int = 10, run_dir: str | os.PathLike | None = None,
                 monitor: str | None = "val_loss", mode: str = "min", patience: int | None = None,
                 device: str = "auto", precision: str = "auto", grad_clip: float | None = None,
                 accumulate: int = 1, limit_batches: int | None = None, seed: int | None = 42,
                 deterministic: bool = False, callbacks: Iterable[Callback] = (),
                 progress: bool | None = None, log_every_epoch: bool = True):
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.max_epochs = max_epochs
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.monitor, self.mode = monitor, mode
        self.grad_clip, self.accumulate, self.limit_batches = grad_clip, accumulate, limit_batches
        self.seed, self.deterministic = seed, deterministic
        self.device = pick_device(device)
        self.dist: DistInfo = init_distributed(self.device)
        self.amp_dtype = autocast_dtype(precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.progress = progress if progress is not None else (
            sys.stderr.isatty() and not os.environ.get("CI") and self.dist.is_main)
        self.log_every_epoch = log_every_epoch

        self.callbacks: list[Callback] = list(callbacks)
        if patience is not None and monitor is not None:
            self.callbacks.append(EarlyStopping(monitor, mode, patience))
        if self.run_dir is not None:
            self.callbacks.append(HistoryCSV(self.run_dir / "history.csv"))
            self.callbacks.append(ModelCheckpoint(self.run_dir, monitor, mode))
        self.callbacks.sort(key=lambda cb: cb.order)

        self.epoch = 0          # epochs completed
        self.global_step = 0    # optimiser steps taken
        self.history: list[dict] = []
        self.should_stop = False
        self.optimizers: list[torch.optim.Optimizer] = []
        self.schedulers: list[dict] = []
        self.task: Task | None = None

    @classmethod
    def from_args(cls, args, run_dir=None, **overrides) -> "Trainer":
        """Build a Trainer from the options of :func:`core.cli.add_training_args`."""
        kwargs = dict(max_epochs=args.epochs, run_dir=run_dir, device=args.device, precision=args.precision,
                      grad_clip=args.grad_clip, accumulate=args.accumulate, limit_batches=args.limit_batches,
                      seed=args.seed, deterministic=args.deterministic, patience=args.patience)
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- public API ---------------------------------------------------------------------------
    def fit(self, task: Task, train_loader: DataLoader, val_loader: DataLoader | None = None,
            resume: str | os.PathLike | None = None) -> list[dict]:
        """Train ``task``; returns the history (one dict of metrics per epoch)."""
        if self.seed is not None:
            seed_everything(self.seed, self.deterministic)
        self.task = task
        task._trainer = self
        task.to(self.device)
        setup = _OptimizerSetup(task.configure_optimizers())
        self.optimizers, self.schedulers = setup.optimizers, setup.schedulers
        if resume is not None:
            self._restore(resume)
        if self.dist.enabled:
            train_loader = self._distributed_loader(train_loader)
            val_loader = self._distributed_loader(val_loader) if val_loader is not None else None
            self._wrap_ddp(task)
        for cb in self.callbacks:
            cb.on_fit_start(self, task)
        try:
            while self.epoch < self.max_epochs and not self.should_stop:
                self._run_epoch(task, train_loader, val_loader)
        finally:
            self._unwrap_ddp(task)
        for cb in self.callbacks:
            cb.on_fit_end(self, task)
        barrier()  # rank 0's checkpoints are on disk before any process reads them
        return self.history

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

    def log(self, message: str) -> None:
        """Print on rank 0 only (tqdm-safe)."""
        if self.dist.is_main:
            tqdm.write(message) if self.progress else print(message, flush=True)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor | None,
                       scale: float = 1.0, step: bool = True) -> None:
        """Backward ``loss * scale``; if ``step``, unscale, clip, step, zero the gradients and
        advance step-wise schedulers of this optimiser."""
        if loss is not None:
            self.scaler.scale(loss * scale).backward()
        if not step:
            return
        if self.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        index = self.optimizers.index(optimizer)
        if index == 0:
            self.global_step += 1
        for sched in self.schedulers:
            if sched["interval"] == "step" and sched["scheduler"].optimizer is optimizer:
                sched["scheduler"].step()

    # -- one epoch ----------------------------------------------------------------------------
    def _run_epoch(self, task: Task, train_loader: DataLoader, val_loader: DataLoader | None) -> None:
        epoch = self.epoch + 1
        start = time.perf_counter()
        sampler = getattr(train_loader, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        metrics = {f"train_{k}": v for k, v in self._train_epoch(task, train_loader, epoch).items()}
        if val_loader is not None:
            metrics.update({f"val_{k}": v for k, v in self._validate(task, val_loader).items()})
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
        sums: dict[str, float] = {}
        count = 0
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{self.max_epochs}", leave=False,
                   disable=not self.progress, dynamic_ncols=True)
        for i, batch in enumerate(loader):
            if i >= n_batches:
                break
            batch = move_to_device(batch, self.device)
            if task.automatic_optimization:
                logs = self._automatic_step(task, batch, i, n_batches)
            else:
                with autocast(self.device, self.amp_dtype):
                    logs = _as_logs(task.training_step(batch), require_loss=False)
            n = task.batch_size(batch)
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            count += n
            bar.update(1)
            if "loss" in logs:
                bar.set_postfix(loss=f"{float(logs['loss']):.4f}")
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
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {self.epoch + 1}, batch {index}: "
                                         "lower the learning rate or check the data")
            self.scaler.scale(loss / group_size).backward()
        if is_last_in_group:
            for opt in self.optimizers:
                self.optimizer_step(opt, None)
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in logs.items()}

    @torch.no_grad()
    def _validate(self, task: Task, loader: DataLoader) -> dict:
        task.eval()
        n_batches = self._num_batches(loader)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
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
        metrics.update({k: float(v) for k, v in task.on_validation_epoch_end().items()})
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
        """Everything needed to continue this run exactly: see :meth:`save_checkpoint`."""
        return {
            "task": task_state_dict(self.task),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [s["scheduler"].state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": list(self.history),
            "callbacks": {f"{type(cb).__name__}:{i}": cb.state_dict() for i, cb in enumerate(self.callbacks)},
            "rng": rng_state(),
            "monitor": self.monitor,
            "best_score": self.best_score,
        }

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write a full checkpoint atomically (a crash mid-write leaves the old file intact)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.checkpoint_state(), tmp)
        os.replace(tmp, path)
        return path

    def _restore(self, path: str | os.PathLike) -> None:
        checkpoint = load_checkpoint(path, self.task, map_location=self.device)
        if len(checkpoint["optimizers"]) != len(self.optimizers):
            raise RuntimeError(f"{path}: has {len(checkpoint['optimizers'])} optimiser state(s), "
                               f"the task configures {len(self.optimizers)}")
        for opt, state in zip(self.optimizers, checkpoint["optimizers"]):
            opt.load_state_dict(state)
        for sched, state in zip(self.schedulers, checkpoint["schedulers"]):
            sched["scheduler"].load_state_dict(state)
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.epoch = checkpoint["epoch"]
        self.global_step = checkpoint["global_step"]
        self.history = list(checkpoint["history"])
        saved = checkpoint["callbacks"]
        for i, cb in enumerate(self.callbacks):
            key = f"{type(cb).__name__}:{i}"
            if key in saved:
                cb.load_state_dict(saved[key])
        set_rng_state(checkpoint["rng"])
        self.log(f"resumed from {path} at epoch {self.epoch}")

    # -- distributed --------------------------------------------------------------------------
    def _distributed_loader(self, loader: DataLoader) -> DataLoader:
        """The same loader with a :class:`DistributedSampler`: each process reads its share."""
        shuffle = isinstance(loader.sampler, RandomSampler)
        sampler = DistributedSampler(loader.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                     shuffle=shuffle, seed=self.seed or 0, drop_last=loader.drop_last)
        return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                          num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                          pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                          worker_init_fn=loader.worker_init_fn,
                          persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False)

    def _wrap_ddp(self, task: Task) -> None:
        """Wrap each trainable sub-module of the task in DDP, so the task's own code is unchanged."""
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
