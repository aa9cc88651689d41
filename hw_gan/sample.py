"""Draw faces from a trained GAN: PNG files, or one grid.

    python -m hw_gan.sample --run runs/hw_gan/<name> --n 64 --out samples/      # 64 PNG files
    python -m hw_gan.sample --run runs/hw_gan/<name> --n 64 --grid grid.png     # one 8x8 grid

The same ``--seed`` gives the same faces. Existing files are never overwritten.
"""
from __future__ import annotations

from pathlib import Path

from core import cli
from core.console import echo
from core.errors import UserError

from .images import save_grid, save_pngs
from .models import generate, load_model


def build_parser():
    parser = cli.make_parser("hw_gan.sample", __doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by hw_gan.train")
    parser.add_argument("--n", type=cli.positive_int, default=64, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent vectors")
    parser.add_argument("--out", default=None,
                        help="folder for one PNG per image, sample_00000.png ... (holding none of those yet)")
    parser.add_argument("--grid", default=None, help="a new PNG file with all images in a grid")
    parser.add_argument("--ncols", type=cli.positive_int, default=8, help="columns of the grid")
    return parser


def main(argv: list[str] | None = None) -> list[Path]:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    if args.out is None and args.grid is None:
        parser.error("give --out DIR (PNG files) and/or --grid FILE")
    if args.out and Path(args.out).exists() and any(Path(args.out).glob("sample_*.png")):
        raise UserError(f"--out {args.out}: already holds sample_*.png files (choose a new folder)")
    if args.grid and Path(args.grid).exists():
        raise UserError(f"--grid {args.grid}: file exists (choose a new name)")
    loaded = load_model(args.run)
    echo(f"model: generator of {args.run} ({loaded.config['image_size']} px, latent {loaded.config['latent']}); "
         f"data: none, {args.n} latent vectors from seed {args.seed}")
    images = generate(loaded.model, args.n, args.seed)
    written = []
    if args.out:
        written += save_pngs(images, args.out)
        echo(f"wrote {args.n} PNG files to {args.out}")
    if args.grid:
        written.append(save_grid(images, args.grid, args.ncols))
        echo(f"wrote the grid to {args.grid}")
    return written


if __name__ == "__main__":
    cli.run_command(main)
