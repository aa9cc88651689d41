"""Where a run's numbers and pictures go besides ``history.csv``: TensorBoard event files.

``--logger tensorboard,csv`` (the default of every training command) adds a
:class:`TensorBoardLogger` to the Trainer; ``--logger csv`` leaves only ``history.csv``,
which the Trainer always writes in a run folder (the commands' plots and summaries read it,
so ``csv`` cannot be left out). Where the ``tensorboard`` package is not installed,
:func:`make_loggers` says so in one line and the run keeps ``history.csv`` alone.

What a run's event file (``events.out.tfevents.*`` in the run folder) holds:

- ``epoch/<name>``: every column of ``history.csv`` (``train_loss``, ``val_iou``, ``lr``,
  ``time``...), at step = the epoch (1, 2, ...);
- ``step/<name>``: each number ``training_step`` returns (``loss``; a GAN's ``loss_d``,
  ``loss_g``...), averaged over the batches since the previous point, and ``step/lr``
  (``step/lr1``... for more optimisers), every ``log_every`` optimiser steps, at step =
  ``trainer.global_step``;
- images that callbacks send with ``trainer.log_image(tag, image)``, at step = the epoch;
- at the end of ``fit``, the run's settings (``vars(args)``) as hparams with the final
  metrics ``hparams/<name>``: the last epoch's (``lr`` and ``time`` left out) and
  ``hparams/best_<monitor>``; TensorBoard's HPARAMS tab compares runs by them.

TensorBoard stores scalars as 32-bit floats: each ``epoch/<name>`` value is exactly the
``history.csv`` value rounded to float32. ``tensorboard --logdir runs`` shows every run of
every homework. Under DDP only rank 0 writes.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .callbacks import Callback
from .console import echo
from .device import is_main_process

if TYPE_CHECKING:  # pragma: no cover (annotations only)
    from .trainer import Task, Trainer

LOGGER_NAMES = ("tensorboard", "csv")
DEFAULT_LOGGERS = "tensorboard,csv"
DEFAULT_LOG_EVERY = 50
_said_missing = False  # the missing-package line is printed once per process


def parse_logger_names(text: str) -> tuple[str, ...]:
    """The loggers named in ``text`` (comma-separated, e.g. ``"tensorboard,csv"``), in order.

    Raises:
        ValueError: an unknown or repeated name, or a list without ``csv`` (history.csv is
            read by every command's plots), with the message to show the user.
    """
    names = tuple(part.strip().lower() for part in str(text).split(","))
    unknown = [name for name in names if name not in LOGGER_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown logger {', '.join(map(repr, unknown)) or repr(text)} "
                         f"(choose a comma-separated list of {', '.join(LOGGER_NAMES)})")
    if len(set(names)) != len(names):
        raise ValueError(f"a logger is named twice in {text!r}")
    if "csv" not in names:
        raise ValueError(f"{text!r}: csv cannot be left out (the run's plots and summaries read history.csv); "
                         "use 'tensorboard,csv' or 'csv'")
    return names


def tensorboard_available() -> bool:
    """Whether TensorBoard event files can be written (the ``tensorboard`` package imports)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def make_loggers(names, run_dir: str | os.PathLike | None, *, log_every: int = DEFAULT_LOG_EVERY,
                 hparams: dict | None = None) -> list[Callback]:
    """The Trainer callbacks for the loggers ``names`` (a tuple, or text for
    :func:`parse_logger_names`) writing into ``run_dir``.

    ``csv`` needs no callback (the Trainer writes ``history.csv`` in its run folder);
    ``tensorboard`` gives a :class:`TensorBoardLogger`, or, when the ``tensorboard`` package
    is missing, nothing, and the first time in the process one printed line saying so. No
    ``run_dir``: no logger.
    """
    global _said_missing
    if isinstance(names, str):
        names = parse_logger_names(names)
    if run_dir is None or "tensorboard" not in names:
        return []
    if not tensorboard_available():
        if not _said_missing:
            echo("tensorboard is not installed: this run logs to history.csv only (pip install tensorboard)")
            _said_missing = True
        return []
    return [TensorBoardLogger(run_dir, log_every=log_every, hparams=hparams)]


def plain_hparams(settings: dict) -> dict:
    """``settings`` as TensorBoard hparams: numbers, booleans and text kept, ``None`` left
    out, anything else (lists, paths) as its text."""
    out = {}
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, (bool, int, float, str)):
            out[str(key)] = value
        else:
            out[str(key)] = str(value)
    return out


def image_array(image) -> np.ndarray:
    """``image`` as an (H, W, 3 or 4) uint8 array.

    Accepted: a path to an image file, a PIL image, a matplotlib figure, a NumPy array
    (H, W) or (H, W, C), or a torch tensor (C, H, W) or (H, W); floating-point values are
    taken in [0, 1] (clipped), integers as 0-255.

    Raises:
        ValueError: another shape or type, naming it.
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ValueError(f"{path}: image file not found")
        with Image.open(path) as opened:
            image = opened.convert("RGBA" if opened.mode in ("RGBA", "LA", "P") else "RGB")
    elif hasattr(image, "savefig"):  # a matplotlib figure, rendered as it would be saved
        buffer = io.BytesIO()
        image.savefig(buffer, format="png")
        buffer.seek(0)
        with Image.open(buffer) as opened:
            image = opened.convert("RGB")
    if isinstance(image, Image.Image):
        array = np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"))
    elif hasattr(image, "detach") and hasattr(image, "permute"):  # a torch tensor, channels first
        tensor = image.detach().float().cpu() if image.is_floating_point() else image.detach().cpu()
        if tensor.dim() == 3:
            tensor = tensor.permute(1, 2, 0)
        array = tensor.numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(f"cannot log an image of type {type(image).__name__} (give a PIL image, an array, "
                         "a tensor, a matplotlib figure or an image file)")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image must be (H, W), (H, W, 1|3|4) or a tensor (1|3|4, H, W); got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        array = (np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).round()
    array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


class TensorBoardLogger(Callback):
    """Write a run's curves, pictures and settings as TensorBoard event files in ``log_dir``
    (see the module docstring for what goes where).

    Args:
        log_dir: the run folder (the event file goes directly in it).
        log_every: write the ``step/*`` points every this many optimiser steps.
        hparams: the run's settings (``vars(args)``), written with the final metrics at the
            end of ``fit``; ``None``: no hparams.

    The event file is opened at the first point written, flushed after every epoch and
    closed at the end of ``fit``. A resumed run writes a new event file beside the old ones;
    TensorBoard shows, for a step written twice (after the checkpoint, by the interrupted
    process and again by the resumed one), the later value. Under DDP only rank 0 writes;
    elsewhere every method does nothing.
    """

    order = 120  # after ModelCheckpoint and HistoryCSV: an epoch is shown once its checkpoint is on disk

    def __init__(self, log_dir: str | os.PathLike, log_every: int = DEFAULT_LOG_EVERY, hparams: dict | None = None):
        if int(log_every) < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.log_dir = Path(log_dir)
        self.log_every = int(log_every)
        self.hparams = dict(hparams) if hparams is not None else None
        self.writer = None
        self._active = True
        self._fitting = False
        self._sums: dict[str, float] = {}
        self._count = 0
        self._last_logged = -1

    # -- the event file ---------------------------------------------------------------------
    def _open(self):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.log_dir))
        return self.writer

    def close(self) -> None:
        """Write what is pending and close the event file (a later point opens a new one)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def log_image(self, tag: str, image, step: int) -> None:
        """Add ``image`` (anything :func:`image_array` takes) under ``tag`` at ``step``; also
        after ``fit`` (into a new event file, closed at once). Rank 0 only."""
        if not (self._active and is_main_process()):
            return
        self._open().add_image(tag, image_array(image), int(step), dataformats="HWC")
        if not self._fitting:
            self.close()

    # -- the Trainer's hooks ----------------------------------------------------------------
    def on_fit_start(self, trainer: "Trainer", task: "Task") -> None:
        self._active, self._fitting = trainer.dist.is_main, True
        self._sums, self._count, self._last_logged = {}, 0, trainer.global_step

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        if not self._active:
            return
        for key, value in outputs.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1
        step = trainer.global_step
        if step == self._last_logged or step % self.log_every:
            return
        self._last_logged = step
        writer = self._open()
        for key, total in self._sums.items():
            writer.add_scalar(f"step/{key}", total / self._count, step)
        for i, optimizer in enumerate(trainer.optimizers):
            writer.add_scalar("step/lr" if i == 0 else f"step/lr{i}", optimizer.param_groups[0]["lr"], step)
        self._sums, self._count = {}, 0

    def on_epoch_end(self, trainer, task, metrics):
        if not self._active or not trainer.history:
            return
        row = trainer.history[-1]
        writer = self._open()
        for key, value in row.items():
            if key != "epoch" and _is_number(value):
                writer.add_scalar(f"epoch/{key}", float(value), row["epoch"])
        writer.flush()

    def on_fit_end(self, trainer, task):
        self._fitting = False
        if not self._active:
            return
        if self.hparams is not None and trainer.history:
            row = trainer.history[-1]
            final = {f"hparams/{k}": float(v) for k, v in row.items()
                     if k not in ("epoch", "time") and not re.fullmatch(r"lr\d*", k) and _is_number(v)}
            if trainer.monitor is not None and trainer.best_score is not None:
                final[f"hparams/best_{trainer.monitor}"] = float(trainer.best_score)
            self._write_hparams(plain_hparams(self.hparams), final, row["epoch"])
        self.close()

    def _write_hparams(self, settings: dict, final: dict, step: int) -> None:
        """The HPARAMS tab's session in this run's own event file (``SummaryWriter.add_hparams``
        would put it in a sub-folder, i.e. another run)."""
        from torch.utils.tensorboard.summary import hparams

        writer = self._open()
        experiment, start, end = hparams(settings, final)
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary, step)
        for key, value in final.items():
            writer.add_scalar(key, value, step)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def log_run_images(args, run_dir: str | os.PathLike, images: dict, step: int) -> None:
    """Add the figures a command drew after training (``{tag: image}``, anything
    :func:`image_array` takes) to the run's TensorBoard files at ``step``, when its ``--logger``
    (``args.logger``) includes tensorboard; nothing otherwise. Rank 0 only."""
    for logger in make_loggers(getattr(args, "logger", "csv"), run_dir):
        for tag, image in images.items():
            logger.log_image(tag, image, step)
