"""Read the plates in images with a trained run.

    python -m hw_plates.predict --run runs/hw_plates/<name> car1.jpg car2.jpg --out predictions/

Each image is read as one plate crop. Writes ``predictions.json`` (per image: the plates'
boxes, scores and texts) and a copy of each image with its plates drawn and labelled into
``--out`` (default: ``<run>/predict``, a fresh folder each time).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core import cli
from core.data import load_image
from core.device import echo

from .data import prepare_crop, to_input
from .report import load_reader
from .task import read_crops


def build_parser():
    parser = cli.make_parser("hw_plates.predict", "Read the licence plates in images with a trained run.")
    parser.add_argument("--run", required=True, help="run folder written by hw_plates.train")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", default=None, help="output folder (default <run>/predict, made unique)")
    parser.add_argument("--beam-width", type=int, default=1, help="1: greedy decoding; more: prefix beam search")
    return parser


def unique_folder(base: Path) -> Path:
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def draw_plates(image: np.ndarray, plates: list[dict], path: Path) -> None:
    """The image with each plate's box in red and its text above it."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for plate in plates:
        x1, y1, x2, y2 = plate["box"]
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=(255, 0, 0), width=2)
        label = plate["text"] or "?"
        left, top, right, bottom = draw.textbbox((x1, max(0, y1 - 12)), label)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(255, 0, 0))
        draw.text((x1, max(0, y1 - 12)), label, fill=(255, 255, 255))
    canvas.save(path)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    if args.beam_width < 1:
        parser.error(f"--beam-width must be at least 1, got {args.beam_width}")
    reader = load_reader(args.run)
    height, width = reader.input_size
    images = {path: np.asarray(load_image(path)) for path in args.images}
    out = Path(args.out) if args.out else unique_folder(Path(args.run) / "predict")
    out.mkdir(parents=True, exist_ok=True)
    echo(f"reading {len(images)} image(s) with the reader of {args.run}; each image is one plate crop")
    crops = [to_input(prepare_crop(image, height, width)) for image in images.values()]
    import torch

    texts = read_crops(reader, torch.stack(crops), args.beam_width)
    results = {}
    for (path, image), text in zip(images.items(), texts):
        plates = [{"box": [0, 0, image.shape[1], image.shape[0]], "score": 1.0, "text": text}]
        results[str(path)] = plates
        draw_plates(image, plates, out / f"{Path(path).stem}_plates.png")
        echo(f"{path}: {text or '(nothing read)'}")
    (out / "predictions.json").write_text(json.dumps(results, indent=2) + "\n")
    echo(f"wrote {out / 'predictions.json'} and {len(results)} drawn image(s) to {out}")
    return results


if __name__ == "__main__":
    cli.run_command(lambda: None if main() else None)
