"""Write samples of a trained run as PNG files, one per sample.

    python -m hw_autoencoder.sample --run RUN --n 64 --out samples/        # VAE: from the prior
    python -m hw_autoencoder.sample --run RUN --n 10 --digit 7 --out sevens/   # CVAE: one digit

A VAE samples codes from its prior N(0, I); an AE from a Gaussian fitted to its training codes
(the course's hint); a CVAE cycles through the digits unless ``--digit`` picks one. ``--out``
must be a new or empty folder (earlier samples are never overwritten).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import cli
from core.console import echo
from core.device import pick_device
from core.errors import UserError

from .latent import sample_images
from .models import load_model


def write_pngs(images: torch.Tensor, folder: Path, prefix: str = "sample") -> list[Path]:
    """One 8-bit PNG per image (grey for one channel)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        array = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = folder / f"{prefix}_{i:04d}.png"
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> list[Path]:
    parser = cli.make_parser("hw_autoencoder.sample", "Write samples of a trained run as PNG files.")
    parser.add_argument("--run", required=True, help="run folder written by hw_autoencoder.train")
    parser.add_argument("--n", type=cli.positive_int, default=64, help="number of samples")
    parser.add_argument("--digit", type=cli.nonneg_int, default=None, help="CVAE: the digit to sample")
    parser.add_argument("--out", required=True, help="a new or empty folder for the PNG files")
    parser.add_argument("--seed", type=int, default=0, help="seed of the codes")
    parser.add_argument("--temperature", type=cli.positive_float, default=1.0,
                        help="scale of the codes' spread: below 1, fewer odd samples, less variety")
    parser.add_argument("--device", type=cli.device_name, default="auto", help="auto, cpu, cuda, mps")
    args = cli.parse_args(parser, argv)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder (samples are never overwritten)")
    loaded = load_model(args.run)
    model = loaded.model.to(pick_device(args.device))
    if args.digit is not None:
        if not getattr(model, "conditional", False):
            raise UserError(f"--digit: needs a cvae run; {args.run} is a {loaded.config['model']} run")
        if not 0 <= args.digit < model.classes:
            raise UserError(f"--digit {args.digit}: unknown digit, expected 0-{model.classes - 1}")
    images = sample_images(model.cpu(), args.n, args.seed, args.digit, args.temperature)
    paths = write_pngs(images, out)
    echo(f"wrote {len(paths)} samples to {out}/ ({paths[0].name} ... {paths[-1].name})")
    return paths


if __name__ == "__main__":
    cli.run_command(main)
