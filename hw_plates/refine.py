"""A second look at each plate the detector finds: a small CNN that moves the box's edges onto
the plate.

The detector sees a photo squashed to ``--det-size`` pixels and places boxes on a heat map of
stride 8, so on a plate 30-60 px wide in the photo one map cell is a character or more; a box
that ends inside the first or last character loses it for the reader. The refiner looks at a
window around the found box, cut from the photo as loaded (:func:`cut_window`: ``window``
times the box's width and height, resized to the refiner's input), and predicts where the
plate's four edges are in that window (:class:`BoxRefiner`). It is trained on the training
photos' true boxes with random edge noise (:class:`EdgeNoise`, :class:`RefineDataset`) and
applied ``rounds`` times (:func:`refine_boxes`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from core.data import IMAGENET_MEAN, IMAGENET_STD
from core.optim import adamw_one_cycle
from core.trainer import Task

from .data import Photo


class BoxRefiner(nn.Module):
    """Windows (B, 3, H, W) in [0, 1] around boxes -> the plate's edges (B, 4): x1, y1, x2, y2
    as fractions of the window's width and height (0: its left or top side, 1: its right or
    bottom side).

    ``width`` w: four stages of a 3x3 convolution, batch norm, ReLU and 2x2 max pooling with
    w, 2w, 4w, 6w channels, then two linear layers (128 units between them) on the flattened
    map, which keeps where things are. The output starts at the edges a window of ``window``
    times a box's size has around that box (the box the window was cut for)."""

    def __init__(self, width: int = 16, window: tuple[float, float] = (1.8, 2.6),
                 input_size: tuple[int, int] = (32, 128)):
        super().__init__()
        height, span = input_size
        if height % 16 or span % 16:
            raise ValueError(f"the refiner's input size must be multiples of 16, got {height}x{span}")
        if min(window) <= 1:
            raise ValueError(f"the window must be larger than the box (factors above 1), got {window}")
        self.width, self.window, self.input_size = width, tuple(window), (height, span)
        channels = [3, width, 2 * width, 4 * width, 6 * width]
        self.features = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b),
                                                      nn.ReLU(inplace=True), nn.MaxPool2d(2))
                                        for a, b in zip(channels, channels[1:])])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels[-1] * (height // 16) * (span // 16), 128),
                                  nn.ReLU(inplace=True), nn.Linear(128, 4))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        sx, sy = self.window
        self.register_buffer("start", torch.tensor([(sx - 1) / (2 * sx), (sy - 1) / (2 * sy),
                                                    (sx + 1) / (2 * sx), (sy + 1) / (2 * sy)]), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((images - self.mean) / self.std)) + self.start


def window_around(box, window: tuple[float, float]) -> list[float]:
    """The window ``window`` times the box's width and height, centred on the box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, window[0] * (x2 - x1) / 2, window[1] * (y2 - y1) / 2
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def cut_window(image: np.ndarray, box, window: tuple[float, float], size: tuple[int, int]
               ) -> tuple[np.ndarray, list[int]]:
    """The pixels of the window around ``box`` (:func:`window_around`, rounded out to whole
    pixels; parts outside the photo repeat its border) resized to ``size`` (height, width),
    uint8 (H, W, 3), and that window's pixel corners (x1, y1, x2, y2), x2/y2 exclusive."""
    wx1, wy1, wx2, wy2 = window_around(box, window)
    x1, y1 = int(np.floor(wx1)), int(np.floor(wy1))
    x2, y2 = max(int(np.ceil(wx2)), x1 + 1), max(int(np.ceil(wy2)), y1 + 1)
    h, w = image.shape[:2]
    region = image[max(0, y1):min(h, y2), max(0, x1):min(w, x2)]
    if region.size == 0:  # the window lies wholly outside the photo: its nearest border pixel
        region = image[min(max(y1, 0), h - 1):min(max(y1, 0), h - 1) + 1, min(max(x1, 0), w - 1):min(max(x1, 0), w - 1) + 1]
    pads = (max(0, -y1), max(0, y2 - h), max(0, -x1), max(0, x2 - w))
    if any(pads):
        region = cv2.copyMakeBorder(np.ascontiguousarray(region), *pads, cv2.BORDER_REPLICATE)
    out_h, out_w = size
    shrink = region.shape[1] > out_w or region.shape[0] > out_h
    pixels = cv2.resize(np.ascontiguousarray(region), (out_w, out_h),
                        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return pixels, [x1, y1, x2, y2]


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels (H, W, 3) as a float tensor (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(255)


def to_window(box, corners: Sequence[int]) -> list[float]:
    """``box`` in a window's units (:class:`BoxRefiner`'s output)."""
    x1, y1, x2, y2 = corners
    return [(box[0] - x1) / (x2 - x1), (box[1] - y1) / (y2 - y1), (box[2] - x1) / (x2 - x1), (box[3] - y1) / (y2 - y1)]


def from_window(edges, corners: Sequence[int]) -> list[float]:
    """Edges in a window's units back in photo pixels (the inverse of :func:`to_window`)."""
    x1, y1, x2, y2 = corners
    return [x1 + float(edges[0]) * (x2 - x1), y1 + float(edges[1]) * (y2 - y1),
            x1 + float(edges[2]) * (x2 - x1), y1 + float(edges[3]) * (y2 - y1)]


@torch.no_grad()
def refine_boxes(refiner: BoxRefiner, image: np.ndarray, boxes, rounds: int = 2) -> list[list[float]]:
    """``boxes`` (x1, y1, x2, y2) of an RGB photo (H, W, 3) moved onto their plates by
    ``refiner``, ``rounds`` times (each round cuts new windows around the last round's boxes);
    0 rounds returns them as they are. A refined box is never narrower or lower than 1 pixel."""
    boxes = [[float(v) for v in box] for box in boxes]
    if not boxes or rounds == 0:
        return boxes
    refiner.eval()
    device = next(refiner.parameters()).device
    for _ in range(rounds):
        cuts = [cut_window(image, box, refiner.window, refiner.input_size) for box in boxes]
        edges = refiner(torch.stack([as_tensor(pixels) for pixels, _ in cuts]).to(device)).cpu()
        boxes = [from_window(e.tolist(), corners) for e, (_, corners) in zip(edges, cuts)]
        boxes = [[x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)] for x1, y1, x2, y2 in boxes]
    return boxes


@dataclass(frozen=True)
class EdgeNoise:
    """Each edge of a true box moved independently by a normal draw of ``sd_x`` times the box's
    width (left and right edges) or ``sd_y`` times its height (top and bottom), clipped to
    ``clip`` times that size. The defaults make boxes about as wrong as the plate detector's
    (its errors are in ``docs/homeworks/plates.md``)."""

    sd_x: float = 0.09
    sd_y: float = 0.10
    clip: float = 0.3


class RefineDataset(Dataset):
    """(window (3, H, W) in [0, 1], true edges (4,) in window units) pairs: each plate of
    ``photos`` with its true box moved by ``noise`` (:class:`EdgeNoise`), cut as
    :func:`cut_window` cuts for ``refiner``'s window and input size.

    With ``augment`` each item is a fresh draw (from torch's generator, so
    ``torch.manual_seed`` repeats a run) and is mirrored left to right half of the time, its
    brightness and contrast changed by up to 25 %; without, item ``i``'s noise is fixed by
    ``seed`` (a stable validation set). ``repeats``: each plate that many times per epoch."""

    def __init__(self, photos: Sequence[Photo], refiner: BoxRefiner, noise: EdgeNoise = EdgeNoise(),
                 augment: bool = False, repeats: int = 1, seed: int = 0):
        self.plates = [(i, [float(v) for v in box]) for i, photo in enumerate(photos) for box in photo.boxes]
        self.images = [photo.load() for photo in photos]
        self.window, self.input_size = refiner.window, refiner.input_size
        self.noise, self.augment, self.repeats, self.seed = noise, augment, repeats, seed

    def __len__(self) -> int:
        return len(self.plates) * self.repeats

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        photo, box = self.plates[i % len(self.plates)]
        seed = int(torch.randint(2 ** 31 - 1, ())) if self.augment else self.seed * 100003 + i
        rng = np.random.default_rng(seed)
        w, h = box[2] - box[0], box[3] - box[1]
        scale = np.array([self.noise.sd_x, self.noise.sd_y, self.noise.sd_x, self.noise.sd_y])
        moves = np.clip(rng.normal(0.0, 1.0, 4) * scale, -self.noise.clip, self.noise.clip) * [w, h, w, h]
        pixels, corners = cut_window(self.images[photo], np.add(box, moves), self.window, self.input_size)
        target = to_window(box, corners)
        image = as_tensor(pixels)
        if self.augment:
            if rng.random() < 0.5:
                image, target = image.flip(-1), [1 - target[2], target[1], 1 - target[0], target[3]]
            mean = image.mean()
            image = ((image - mean) * rng.uniform(0.75, 1.25) + mean * rng.uniform(0.75, 1.25)).clamp(0, 1)
        return image, torch.tensor(target, dtype=torch.float32)


def collate_windows(batch) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = zip(*batch)
    return torch.stack(images), torch.stack(targets)


def edge_errors(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each box's mean distance (N,) between predicted and true edges, the left and right ones
    in plate widths, the top and bottom ones in plate heights (both in window units)."""
    size = torch.stack([target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]], dim=1).repeat(1, 2)
    return ((predicted - target).abs() / size.clamp_min(1e-6)).mean(dim=1)


class RefinerTask(Task):
    """:class:`BoxRefiner` on :class:`RefineDataset`: smooth L1 loss on the four edges (in
    window units, ``beta`` 0.02), AdamW with a one-cycle schedule. Validation logs
    ``edge_error`` (:func:`edge_errors`, averaged over boxes)."""

    def __init__(self, model: BoxRefiner, lr: float = 2e-3, weight_decay: float = 1e-4):
        super().__init__()
        self.model, self.lr, self.weight_decay = model, lr, weight_decay

    def training_step(self, batch):
        images, targets = batch
        return F.smooth_l1_loss(self.model(images), targets, beta=0.02)

    def validation_step(self, batch) -> dict:
        images, targets = batch
        predicted = self.model(images)
        return {"loss": F.smooth_l1_loss(predicted, targets, beta=0.02), "edge_error": edge_errors(predicted, targets)}

    def configure_optimizers(self):
        return adamw_one_cycle(self.model.parameters(), self.lr, self.trainer.estimated_stepping_batches,
                               self.weight_decay)
