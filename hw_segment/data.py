"""PH2 skin-lesion images and masks, built-in procedural look-alikes, splits and augmentation.

PH2 (Mendonça et al., EMBC 2013) is read from the layout the course uses::

    PH2Dataset/PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
                                        /IMD002_lesion/IMD002_lesion.bmp

Images are resized with anti-aliasing to ``size x size`` and scaled to [0, 1]; masks are
resized without anti-aliasing and thresholded at 0.5, as in the course template. The whole
resized set is kept in memory as tensors (200 images at 256 px are about 160 MB).

Without PH2 on disk, :func:`make_lesions` draws lesion-like images: irregular textured blobs on
skin-coloured, vignetted backgrounds with hair-like strokes, so every command runs offline.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from core.data import DataError, load_image_array

PH2_IMAGES_DIR = "PH2 Dataset images"


@dataclass(frozen=True)
class Ph2Case:
    name: str
    image_path: Path
    mask_path: Path


@dataclass
class SegmentationData:
    """Images (N, 3, S, S) float in [0, 1], masks (N, 1, S, S) float in {0, 1}, case names."""

    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, index) -> "SegmentationData":
        index = torch.as_tensor(index, dtype=torch.long)
        return SegmentationData(self.images[index], self.masks[index], [self.names[i] for i in index.tolist()],
                                self.description)


# -- PH2 on disk --------------------------------------------------------------------------------
def find_ph2_images_dir(root: str | os.PathLike) -> Path:
    """Accept the folder holding ``PH2Dataset``, ``PH2Dataset`` itself or ``PH2 Dataset images``."""
    root = Path(root)
    for candidate in (root / "PH2Dataset" / PH2_IMAGES_DIR, root / PH2_IMAGES_DIR, root):
        if candidate.is_dir() and any(p.is_dir() and p.name.startswith("IMD") for p in candidate.iterdir()):
            return candidate
    raise DataError(f"{root}: no PH2 cases found (expected PH2Dataset/{PH2_IMAGES_DIR}/IMDxxx/ folders)")


def find_ph2_cases(root: str | os.PathLike) -> list[Ph2Case]:
    """Every ``IMDxxx`` case under ``root`` with its image and lesion-mask files.

    Raises:
        DataError: no cases, or a case without its image or its mask (the case is named).
    """
    images_dir = find_ph2_images_dir(root)
    cases = []
    for case_dir in sorted(p for p in images_dir.iterdir() if p.is_dir() and p.name.startswith("IMD")):
        name = case_dir.name
        image = case_dir / f"{name}_Dermoscopic_Image" / f"{name}.bmp"
        mask = case_dir / f"{name}_lesion" / f"{name}_lesion.bmp"
        if not image.is_file():
            raise DataError(f"PH2 case {name}: dermoscopic image not found ({image})")
        if not mask.is_file():
            raise DataError(f"PH2 case {name}: lesion mask not found ({mask})")
        cases.append(Ph2Case(name, image, mask))
    return cases


def resize_image(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, size, size) in [0, 1], bilinear with anti-aliasing."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp_(0.0, 1.0)


def resize_mask(mask: np.ndarray, size: int) -> torch.Tensor:
    """bool/uint8 (H, W) -> float (1, size, size) in {0, 1}: bilinear without anti-aliasing, then > 0.5."""
    y = torch.from_numpy(np.array(mask, dtype=np.float32))[None, None]
    y = F.interpolate(y, size=(size, size), mode="bilinear", antialias=False, align_corners=False)
    return (y[0] > 0.5).float()


def read_ph2_case(case: Ph2Case, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One case's resized image and mask. Masks may be 1-bit or 24-bit: grey, then > 127."""
    try:
        image = load_image_array(case.image_path, "RGB")
        mask = load_image_array(case.mask_path, "L") > 127
    except DataError as exc:
        raise DataError(f"PH2 case {case.name}: {exc}") from None
    if image.shape[:2] != mask.shape:
        raise DataError(f"PH2 case {case.name}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                        f"{image.shape[1]}x{image.shape[0]} ({case.mask_path})")
    return resize_image(image, size), resize_mask(mask, size)


def load_ph2(root: str | os.PathLike, size: int = 256) -> SegmentationData:
    """Read and resize every PH2 case under ``root`` (see :func:`find_ph2_images_dir`)."""
    cases = find_ph2_cases(root)
    pairs = [read_ph2_case(case, size) for case in cases]
    images = torch.stack([p[0] for p in pairs])
    masks = torch.stack([p[1] for p in pairs])
    return SegmentationData(images, masks, [c.name for c in cases], f"PH2, {len(cases)} cases at {size}x{size}")


# -- built-in procedural lesions ----------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a random ``cells x cells`` grid upsampled bicubically to ``size``."""
    grid = torch.from_numpy(rng.random((1, 1, cells, cells), dtype=np.float32))
    return F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)[0, 0].clamp(0, 1).numpy()


def _draw_lesion(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # skin: a random tone, slow colour variation and a dark vignette towards the corners
    skin = np.array([0.85, 0.65, 0.55], np.float32) + rng.normal(0, 0.05, 3).astype(np.float32)
    image = skin[None, None, :] * (0.9 + 0.2 * _smooth_noise(rng, size, 4))[..., None]
    corner = np.sqrt((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / math.sqrt(0.5)
    image *= (1 - rng.uniform(0.2, 0.6) * corner ** 2)[..., None]

    # lesion: a star-shaped blob r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k))
    r0 = rng.uniform(0.12, 0.35)
    cy, cx = rng.uniform(0.5 - (0.45 - r0) / 1.5, 0.5 + (0.45 - r0) / 1.5, 2)
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.ones_like(theta)
    for k in range(2, 7):
        radius += rng.uniform(0, 0.25 / k ** 0.7) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    edge_noise = 0.08 * (_smooth_noise(rng, size, 12) - 0.5)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (r0 * radius) + edge_noise
    mask = dist < 1.0

    # pigment: darker towards the centre, blotchy texture, soft (not binary) border
    pigment = np.array([0.45, 0.28, 0.2], np.float32) * rng.uniform(0.4, 1.1) + rng.normal(0, 0.03, 3)
    texture = 0.7 + 0.6 * _smooth_noise(rng, size, rng.integers(6, 16))
    alpha = np.clip((1.0 - dist) / 0.15, 0, 1) * rng.uniform(0.55, 0.95)
    alpha = np.clip(alpha * texture * (1.2 - 0.4 * dist.clip(0, 1)), 0, 1)[..., None]
    image = image * (1 - alpha) + pigment[None, None, :].astype(np.float32) * image * 1.3 * alpha

    # hairs: thin dark curved strokes over everything
    for _ in range(rng.integers(0, 7)):
        t = np.linspace(0, 1, 4 * size)
        x0, y0 = rng.uniform(0, 1, 2)
        angle, bend = rng.uniform(0, 2 * math.pi), rng.normal(0, 1.5)
        length = rng.uniform(0.3, 1.0)
        px = x0 + length * t * np.cos(angle + bend * t)
        py = y0 + length * t * np.sin(angle + bend * t)
        ix, iy = (px * size).astype(int), (py * size).astype(int)
        keep = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
        image[iy[keep], ix[keep]] *= rng.uniform(0.2, 0.5)

    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), mask


def make_lesions(n: int = 400, size: int = 64, seed: int = 0) -> SegmentationData:
    """``n`` procedural lesion images of ``size x size`` with their masks (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    pairs = [_draw_lesion(rng, size) for _ in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
    masks = torch.from_numpy(np.stack([p[1] for p in pairs])).float()[:, None]
    return SegmentationData(images, masks, [f"synthetic{i:04d}" for i in range(n)],
                            f"built-in procedural lesions, {n} images at {size}x{size}")


# -- splits and loaders -------------------------------------------------------------------------
def split_indices(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``n`` cases and split them train/val/test: 100/50/50 for PH2's 200, else 50%/25%/25%."""
    ix = np.random.default_rng(seed).permutation(n)
    if n < 4:
        raise DataError(f"need at least 4 cases to split into train/val/test, got {n}")
    n_train, n_val = n // 2, n // 4
    return ix[:n_train], ix[n_train:n_train + n_val], ix[n_train + n_val:]


def augment(image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
            jitter: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, a rotation by a multiple of 90 degrees (same for image and mask) and a light
    brightness/contrast/per-channel colour jitter of the image (mask unchanged)."""
    r = torch.rand(6, generator=generator)
    if r[0] < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    if r[1] < 0.5:
        image, mask = image.flip(-2), mask.flip(-2)
    k = int(r[2] * 4)
    if k:
        image, mask = torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
    if jitter > 0:
        brightness = 1 + jitter * (2 * r[3] - 1)
        contrast = 1 + jitter * (2 * r[4] - 1)
        colour = 1 + 0.5 * jitter * (2 * torch.rand(3, 1, 1, generator=generator) - 1)
        mean = image.mean()
        image = ((image - mean) * contrast + mean) * brightness * colour
        image = image.clamp(0, 1)
    return image, mask


class SegmentationDataset(Dataset):
    """(image, mask) pairs from in-memory tensors, optionally augmented with :func:`augment`."""

    def __init__(self, data: SegmentationData, train: bool = False, jitter: float = 0.1):
        self.images, self.masks = data.images, data.masks
        self.train, self.jitter = train, jitter

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.train:
            image, mask = augment(image, mask, jitter=self.jitter)
        return image, mask
