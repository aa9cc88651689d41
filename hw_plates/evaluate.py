"""Score a trained run on a plate data set: the reader on the crops (``exact``, ``cer``), the
detector on the photos (``map50``), and both end to end (``e2e_exact``, ``e2e_levenshtein``).

    python -m hw_plates.evaluate --run runs/hw_plates/<name>                 # held-out test plates
    python -m hw_plates.evaluate --run RUN --data-dir PATH/TO/plates --split all --beam-width 8

``--split test`` (default) scores the plates that training held out (the split is a hash of
the plate text, the same in every run); ``--split all`` scores every plate, for a data set the
run never saw. ``--format-weight W`` reads with the run's plate formats at weight W instead of
the run's own (0: without them; :mod:`hw_plates.formats`). Each part the run trained is scored (a ``--stage read`` run has no detector:
crops only; a ``--stage detect`` run has no reader: photos only). Writes ``metrics.json``,
``readings.csv`` (crops), ``plates.csv`` (end to end, per plate: box, detection, score, reading)
and ``photos.csv`` (per photo: plates found, missed and misread, edits), the figures of the
worst crops and of the worst photos (boxes and readings) into
``--run-dir`` (default: ``<run>/eval-<timestamp>``, a fresh folder each time).
"""
from __future__ import annotations

import pandas as pd

from core import cli, runs
from core.data import DataError, resolve_data_root
from core.errors import UserError
from core.console import echo

from .data import SPLITS, CropSet, load_crops, load_photos, make_rendered_plates
from .models import load_model
from .scoring import crop_metrics, cut_metrics, detector_metrics, end_to_end, worst_photos_figure, worst_readings_figure
from .task import reading_views
from .text import Alphabet, levenshtein


def build_parser():
    parser = cli.make_parser("hw_plates.evaluate", "Score a trained hw_plates run on a plate data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_plates.train")
    parser.add_argument("--data-dir", default=None, help="plates root; default $DLS_DATA/plates, else rendered plates")
    parser.add_argument("--split", choices=SPLITS + ("all",), default="test", help="which plates to score")
    parser.add_argument("--beam-width", type=cli.positive_int, default=1,
                        help="1: greedy decoding; more: prefix beam search")
    parser.add_argument("--format-weight", type=cli.nonneg_float, default=None,
                        help="read with the run's plate formats at this weight (hw_plates.formats); 0: without "
                             "them; None: the run's weight")
    parser.add_argument("--n-rendered", type=cli.int_at_least(10), default=300,
                        help="rendered plates (and scenes) when no data is found")
    cli.add_run_args(parser, default="<run>/eval-<timestamp>")
    return parser


def load_eval_data(args, reader, detector, alphabet: Alphabet):
    """Crops (for a reader) and photos (for a detector) of the chosen split."""
    source = resolve_data_root("plates", args.data_dir, builtin="built-in rendered plates (random texts)")
    height, width = reader.input_size if reader is not None else (32, 128)
    if source.builtin:
        crops, photos = make_rendered_plates(args.n_rendered, args.n_rendered if detector else 0, alphabet,
                                             height, width, seed=12345)
    else:
        crops = load_crops(source.root, alphabet, height, width) if reader is not None else None
        photos = load_photos(source.root, alphabet) if detector is not None else []
    if args.split != "all":
        crops = crops.split(args.split) if crops is not None else None
        photos = [p for p in photos if p.split == args.split]
    if reader is not None and not len(crops):
        raise DataError(f"no plate crops in the {args.split} split of the data")
    if detector is not None and not photos:
        raise DataError(f"no photos in the {args.split} split of the data")
    return crops, photos


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    loaded = load_model(args.run)
    reader, detector, det_config = loaded.model.reader, loaded.model.detector, loaded.extras["detection"]
    alphabet = reader.alphabet if reader is not None else Alphabet()
    if args.format_weight is not None and reader is not None:
        if reader.formats is None:
            raise UserError(f"{args.run}: its reader was saved without plate formats (a run older than them); "
                            f"leave out --format-weight")
        reader.formats.weight = args.format_weight
    crops, photos = load_eval_data(args, reader, detector, alphabet)
    echo(f"model from {args.run}: {' + '.join(loaded.model.parts)}; scoring the {args.split} split: "
         f"{len(crops) if crops is not None else 0} crops, {len(photos)} photos")
    run = runs.RunDir.create("hw_plates", args, parent=args.run, prefix="eval-")

    metrics = {}
    if reader is not None:
        scores, predictions = crop_metrics(reader, crops, args.beam_width)
        metrics.update(scores)
        write_readings(run / "readings.csv", crops, predictions)
        worst_readings_figure(crops, predictions, run.plots / "worst_readings.png")
    if detector is not None:
        metrics.update(detector_metrics(detector, photos, det_config["size"], det_config.get("flip", False),
                                        loaded.model.refiner, det_config.get("refine_rounds", 0)))
    if reader is not None and detector is not None:
        scores, rows = end_to_end(detector, reader, photos, det_config["size"], det_config["margin"],
                                  det_config["score_threshold"], args.beam_width, flip=det_config.get("flip", False),
                                  views=reading_views(det_config), refiner=loaded.model.refiner,
                                  rounds=det_config.get("refine_rounds", 0))
        metrics.update(scores)
        metrics.update(cut_metrics(reader, photos, crops, args.beam_width, margin=det_config["margin"]))
        write_plates(run / "plates.csv", rows)
        write_photos(run / "photos.csv", rows)
        worst_photos_figure(rows, run.plots / "worst_photos.png")
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


def write_plates(path, rows: list[dict]) -> None:
    """One line per true plate: its photo, text and box, the detection read for it (box, score)
    or none, the reading and its edits."""
    pd.DataFrame([{"photo": r["photo"], "text": r["text"], "box": r["box"], "found": r["det_box"] is not None,
                   "det_box": r["det_box"], "score": r["score"], "reading": r["reading"],
                   "edits": levenshtein(r["reading"], r["text"])} for r in rows]).to_csv(path, index=False)


def write_photos(path, rows: list[dict]) -> None:
    """One line per photo: its plates, how many were found, missed and misread (found, read
    wrong), and the edits over its plates (the contest's score per photo)."""
    table = pd.DataFrame([{"photo": r["photo"], "found": r["det_box"] is not None,
                           "misread": r["det_box"] is not None and r["reading"] != r["text"],
                           "edits": levenshtein(r["reading"], r["text"])} for r in rows])
    per_photo = table.groupby("photo", sort=False).agg(plates=("found", "size"), found=("found", "sum"),
                                                       misread=("misread", "sum"), edits=("edits", "sum"))
    per_photo.insert(2, "missed", per_photo["plates"] - per_photo["found"])
    per_photo.reset_index().to_csv(path, index=False)


def write_readings(path, crops: CropSet, predictions: list[str]) -> None:
    pd.DataFrame({"file": crops.names, "region": crops.regions, "text": crops.texts, "reading": predictions,
                  "edits": [levenshtein(p, t) for p, t in zip(predictions, crops.texts)]}
                 ).to_csv(path, index=False)


if __name__ == "__main__":
    cli.run_command(main)
