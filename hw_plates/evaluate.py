"""Score a trained run on a plate data set: the reader on the crops (``exact``, ``cer``).

    python -m hw_plates.evaluate --run runs/hw_plates/<name>                 # held-out test plates
    python -m hw_plates.evaluate --run RUN --data-dir PATH/TO/plates --split all --beam-width 8

``--split test`` (default) scores the plates that training held out (the split is a hash of
the plate text, the same in every run); ``--split all`` scores every plate, for a data set the
run never saw. Writes ``metrics.json``, ``readings.csv`` and a figure of the worst readings
into ``--run-dir`` (default: ``<run>/eval-<data>-<split>``, a fresh folder each time).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core import cli
from core.data import DataError, resolve_data_root
from core.device import echo

from .data import SPLITS, CropSet, load_crops, make_rendered_plates
from .report import crop_metrics, load_reader, worst_readings_figure
from .text import levenshtein


def build_parser():
    parser = cli.make_parser("hw_plates.evaluate", "Score a trained hw_plates run on a plate data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_plates.train")
    parser.add_argument("--data-dir", default=None, help="plates root; default $DLS_DATA/plates, else rendered plates")
    parser.add_argument("--split", choices=SPLITS + ("all",), default="test", help="which plates to score")
    parser.add_argument("--beam-width", type=int, default=1, help="1: greedy decoding; more: prefix beam search")
    parser.add_argument("--n-rendered", type=int, default=300, help="rendered plates when no data is found")
    cli.add_run_args(parser)
    return parser


def default_run_dir(run: str, source, split: str) -> str:
    """``<run>/eval-<data>-<split>``, with ``-2``, ``-3`` ... when that folder exists already."""
    base = Path(run) / f"eval-{source.root.name if source.root else 'builtin'}-{split}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return str(path)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    if args.beam_width < 1:
        parser.error(f"--beam-width must be at least 1, got {args.beam_width}")
    reader = load_reader(args.run)
    height, width = reader.input_size
    source = resolve_data_root("plates", args.data_dir, builtin="built-in rendered plates (random texts)")
    if source.builtin:
        crops, _ = make_rendered_plates(args.n_rendered, 0, reader.alphabet, height, width, seed=12345)
    else:
        crops = load_crops(source.root, reader.alphabet, height, width)
    crops = crops if args.split == "all" else crops.split(args.split)
    if not len(crops):
        raise DataError(f"no plates in the {args.split} split of {crops.description}")
    echo(f"reader from {args.run}; scoring {len(crops)} crops ({args.split} split of {crops.description})")
    args.run_dir = args.run_dir or default_run_dir(args.run, source, args.split)
    run = cli.RunDir.create("hw_plates", args)

    scores, predictions = crop_metrics(reader, crops, args.beam_width)
    metrics = dict(scores)
    write_readings(run / "readings.csv", crops, predictions)
    worst_readings_figure(crops, predictions, run.plots / "worst_readings.png")
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


def write_readings(path, crops: CropSet, predictions: list[str]) -> None:
    pd.DataFrame({"file": crops.names, "region": crops.regions, "text": crops.texts, "reading": predictions,
                  "edits": [levenshtein(p, t) for p, t in zip(predictions, crops.texts)]}
                 ).to_csv(path, index=False)


if __name__ == "__main__":
    cli.run_command(lambda: None if main() else None)
