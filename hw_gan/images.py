"""Generated images on disk: grids, one PNG per image, and the animated GIF of training progress.

Grids are written with PIL (no matplotlib): one 8x8 grid per epoch is cheap enough to keep
every epoch's, and the GIF at the end is those grids in order.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from PIL import Image

from core.callbacks import EMA, Callback
from core.checkpoint import unwrap
from core.device import is_main_process

from .data import to_unit
from .models import generator_weights, refresh_batchnorm


def to_pil(image: torch.Tensor) -> Image.Image:
    """An image (3, H, W) in [-1, 1] as an 8-bit RGB PIL image."""
    array = (to_unit(image.detach().float().cpu()).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy())


GAP = 2  # pixels of white between the images of a grid


def grid_image(images: torch.Tensor, ncols: int = 8, gap: int = GAP) -> Image.Image:
    """Images (N, 3, H, W) in [-1, 1] as one grid, ``ncols`` wide, with white ``gap``-pixel
    borders (the course's ``show_images``; no torchvision import, which is slow to load)."""
    images = images.detach().float().cpu()
    n, c, h, w = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = torch.ones(c, gap + nrows * (h + gap), gap + ncols * (w + gap))
    for i, image in enumerate(images):
        top, left = gap + (i // ncols) * (h + gap), gap + (i % ncols) * (w + gap)
        grid[:, top:top + h, left:left + w] = image
    return to_pil(grid)


def save_grid(images: torch.Tensor, path: str | os.PathLike, ncols: int = 8) -> Path:
    """:func:`grid_image` written as a PNG file at ``path`` (its folder created)."""
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
             hold_last: float = 2.0, crop: int | None = None) -> Path:
    """An animated GIF of the PNG ``frames`` (looping; the last frame held ``hold_last`` s),
    each cut to its top-left ``crop`` x ``crop`` pixels when ``crop`` is given."""
    if not frames:
        raise ValueError("no frames for the GIF")
    images = [Image.open(f).convert("RGB") for f in frames]
    if crop is not None:
        images = [im.crop((0, 0, min(crop, im.width), min(crop, im.height))) for im in images]
    durations = [int(seconds_per_frame * 1000)] * (len(images) - 1) + [int(hold_last * 1000)]
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


class SampleGrids(Callback):
    """A grid of the generator's images from the task's fixed noise (``plots/samples/epoch_NNN.png``,
    and the run's loggers' ``samples`` image through ``trainer.log_image``) after the first
    epoch, the last one, and every k-th epoch between, k chosen from the planned epochs so that
    there are about ``frames`` grids; at the end of ``fit``, all of them as ``plots/progress.gif``,
    each cut to its first ``gif_side`` x ``gif_side`` images (at full size: the GIF stays small).
    With a :class:`core.callbacks.EMA` callback, the grids show the averaged generator."""

    def __init__(self, plots_dir: str | os.PathLike, frames: int = 48, gif_side: int = 4):
        self.folder = Path(plots_dir) / "samples"
        self.gif = Path(plots_dir) / "progress.gif"
        self.frames, self.gif_side = frames, gif_side

    def due(self, trainer) -> bool:
        """Whether the epoch just ended gets a grid."""
        every = max(1, -(-trainer.max_epochs // self.frames))
        return trainer.epoch == 1 or trainer.epoch % every == 0 or trainer.should_stop \
            or trainer.epoch >= trainer.max_epochs

    def on_epoch_end(self, trainer, task, metrics):
        if not is_main_process() or not self.due(trainer):
            return
        ema = next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)
        generator = unwrap(task.generator)
        if ema is not None:
            generator = copy.deepcopy(generator)
            generator.load_state_dict(generator_weights(ema.averaged_state_dict(task)))
            refresh_batchnorm(generator, n=1024)
        grid = grid_image(task.sample(generator=generator))
        self.folder.mkdir(parents=True, exist_ok=True)
        grid.save(self.folder / f"epoch_{trainer.epoch:03d}.png")
        trainer.log_image("samples", grid)

    def on_fit_end(self, trainer, task):
        if is_main_process():
            frames = sorted(self.folder.glob("epoch_*.png"), key=lambda p: int(p.stem.split("_")[1]))
            side = unwrap(task.generator).image_size + GAP   # one image and its border in a grid
            save_gif(frames, self.gif, crop=GAP + self.gif_side * side)
