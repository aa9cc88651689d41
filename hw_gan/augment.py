"""Differentiable augmentation of the discriminator's inputs (Zhao et al. 2020,
"Differentiable Augmentation for Data-Efficient GAN Training").

With a few hundred training images the discriminator memorises them and its gradient stops
teaching the generator. DiffAugment transforms *every* image the discriminator sees, real
and generated, in its own step and in the generator's, with operations that gradients pass
through, so the generator is not pushed to produce augmented-looking images. The three
operations of the paper, each drawn independently per image:

- ``color``: brightness ``x + (u - 0.5)``, saturation ``(x - gray) * 2u + gray``, contrast
  ``(x - mean) * (u + 0.5) + mean``, with ``u ~ U(0, 1)`` for each (images in [-1, 1]);
- ``translation``: a shift by up to 1/8 of the image side in each direction, zero padded;
- ``cutout``: one square of half the image side set to zero, centred at a random pixel.
"""
from __future__ import annotations

import torch

POLICIES = ("color", "translation", "cutout")


def parse_policy(text: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> its operations; ``""`` or ``"none"`` -> none.

    Raises:
        ValueError: an operation that is not one of :data:`POLICIES`.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip() and name.strip() != "none")
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}: expected a comma-separated subset of "
                         f"{', '.join(POLICIES)} (or none)")
    return names


def _uniform(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness, saturation and contrast, one draw of each per image."""
    x = x + (_uniform(x) - 0.5)
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (2 * _uniform(x)) + gray
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Each image shifted by whole pixels, up to ``ratio`` of its side in each direction; the
    pixels shifted in are zero."""
    n, c, h, w = x.shape
    dy_max, dx_max = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-dy_max, dy_max + 1, (n, 1), device=x.device)
    dx = torch.randint(-dx_max, dx_max + 1, (n, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None] - dy          # source row of each output row
    cols = torch.arange(w, device=x.device)[None] - dx
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))           # index 0 and -1: zeros
    rows = (rows.clamp(-1, h) + 1)[:, None, :, None].expand(n, c, h, w + 2)
    x = padded.gather(2, rows)
    cols = (cols.clamp(-1, w) + 1)[:, None, None, :].expand(n, c, h, w)
    return x.gather(3, cols)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Each image with one square of ``ratio`` times its side set to zero, at a random centre
    (the square may be cut by the border)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), device=x.device)
    cx = torch.randint(0, w, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    dy, dx = ys - cy + sh // 2, xs - cx + sw // 2            # the square spans [c - side // 2, c - side // 2 + side)
    inside = (dy >= 0) & (dy < sh) & (dx >= 0) & (dx < sw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    """``x`` (N, C, H, W) through the operations of ``policy`` in order (none: ``x`` itself)."""
    for name in policy:
        x = OPERATIONS[name](x)
    return x
