"""Sample grids, PNG files and the animated GIF of training progress.

Grids are written with PIL (no matplotlib): one 8x8 grid per epoch is cheap enough to keep
every epoch's, and the GIF at the end is those grids in order.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from core.callbacks import Callback
from core.device import is_main_process

from .data import to_unit


def to_pil(image: torch.Tensor) -> Image.Image:
    """An image (3, H, W) in [-1, 1] as an 8-bit RGB PIL image."""
    array = (to_unit(image.detach().float().cpu()).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy())


def grid_image(images: torch.Tensor, ncols: int = 8) -> Image.Image:
    """Images (N, 3, H, W) in [-1, 1] as one grid with 2-pixel gaps (the course's show_images)."""
    return to_pil(make_grid(images.detach().float().cpu(), nrow=ncols, padding=2, pad_value=1.0))


def save_grid(images: torch.Tensor, path: str | os.PathLike, ncols: int = 8) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, ncols).save(path)
    return path


def save_pngs(images: torch.Tensor, folder: str | os.PathLike, prefix: str = "sample") -> list[Path]:
    """One PNG per image: ``<folder>/<prefix>_00000.png``, ..."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}_{i:05d}.png"
        to_pil(image).save(path)
        paths.append(path)
    return paths


def save_gif(frames: list[str | os.PathLike], path: str | os.PathLike, seconds_per_frame: float = 0.4,
             hold_last: float = 2.0) -> Path:
    """An animated GIF of the PNG ``frames`` (looping; the last frame held ``hold_last`` s)."""
    if not frames:
        raise ValueError("no frames for the GIF")
    images = [Image.open(f).convert("RGB") for f in frames]
    durations = [int(seconds_per_frame * 1000)] * (len(images) - 1) + [int(hold_last * 1000)]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


class SampleGrids(Callback):
    """After every epoch, a grid of the generator's images from the task's fixed noise
    (``plots/samples/epoch_NNN.png``); at the end of ``fit``, all of them as ``plots/progress.gif``."""

    def __init__(self, plots_dir: str | os.PathLike):
        self.folder = Path(plots_dir) / "samples"
        self.gif = Path(plots_dir) / "progress.gif"

    def on_epoch_end(self, trainer, task, metrics):
        if is_main_process():
            save_grid(task.sample(), self.folder / f"epoch_{trainer.epoch:03d}.png")

    def on_fit_end(self, trainer, task):
        if is_main_process():
            save_gif(sorted(self.folder.glob("epoch_*.png")), self.gif)


class TimeLimit(Callback):
    """Stop training after the epoch in which ``minutes`` of training time have passed."""

    order = 5

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.start = time.perf_counter()

    def on_fit_start(self, trainer, task):
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer, task, metrics):
        if time.perf_counter() - self.start >= self.seconds and trainer.epoch < trainer.max_epochs:
            trainer.should_stop = True
            trainer.log(f"time limit: stopping after epoch {trainer.epoch} ({self.seconds / 60:.1f} min)")


def pixel_array(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] as a float64 array (N, D) of their pixels in [0, 1] (for the metrics)."""
    return to_unit(images.detach().float().cpu()).clamp(0, 1).reshape(len(images), -1).double().numpy()
