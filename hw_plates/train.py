"""Train the licence-plate detector and/or reader.

    python -m hw_plates.train --stage both               # $DLS_DATA/plates, else rendered plates
    python -m hw_plates.train --stage read --beam-width 8
    python -m hw_plates.train --stage detect --data-dir PATH/TO/plates

``--stage read``: a CRNN with CTC on the plate crops (a share ``--low-res`` of them shrunk to
the size a plate has in a photo) and on the plates cut from the photos at their true boxes
with detector-like box noise (``--cut-repeats``; the cuts the pipeline will hand it, from the
photo as loaded, not from the detector's resized input); ``--readers N`` trains N of them
that read as one. ``--stage detect``: a CenterNet on the photos, then a box refiner that moves each box
it finds onto the plate (hw_plates.refine; ``--refine-rounds``). ``--stage both``: the two,
then the photos read end to end (detector with the test-time flip, boxes refined, each plate
cut in five views, ``--views``, and the text likeliest over all of them kept; readings of crops,
cuts and photos weigh in the letter/digit shapes of the training texts, ``--format-weight``:
hw_plates.formats). The plates are
split by text (hw_plates.data.split_of): 70% train, 10% val (picks the best epoch), 20%
test, never trained nor tuned on; the figures reported are the test plates' (the reader on
clean crops and on cuts from the test photos side by side: ``test_exact``,
``test_photo_crops_exact``, ``test_cut_exact``, ``test_noisy_cut_exact``, ``test_cut_loss``;
on the detector's own cuts ``test_detector_cut_exact``). Epochs, batch sizes and learning
rates default to a recipe for the data in use (printed at the start). The run folder gets
args.json, reader/ (reader2/ ...), detector/ and refiner/ (history.csv, best.pt, last.pt), model.pt (the parts
trained, the alphabet and what rebuilds them: :mod:`hw_plates.models`;
``hw_plates.load_model`` reads it), metrics.json and plots (curves, the worst readings of
crops and of photos).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from core import cli, runs
from core.callbacks import EMA
from core.checkpoint import load_checkpoint
from core.console import echo
from core.data import resolve_data_root
from core.inference import count_parameters
from core.detection.centernet import CenterNetTask
from core.detection.data import collate
from core.plots import plot_history

from .data import CropDataset, CropSet, Photo, PhotoCutDataset, collate_crops, load_crops, load_photos, make_rendered_plates
from .detect import PlateDetectionDataset
from .formats import PlateFormats
from .models import CRNN, READER_ARCHS, PlateNet, ReaderEnsemble, make_reader, save_plate_model
from .refine import BoxRefiner, RefineDataset, RefinerTask, collate_windows
from .scoring import crop_metrics, cut_metrics, detector_metrics, end_to_end, worst_photos_figure, worst_readings_figure
from .task import BOX_VIEW, FIVE_VIEWS, ReaderTask
from .text import DEFAULT_ALPHABET, Alphabet

RECIPES = {
    "built-in": dict(epochs=12, batch_size=32, lr=2e-3, readers=1, low_res=0.0, format_weight=0.0,
                     det_epochs=12, det_batch_size=16, det_lr=2e-3, refine_epochs=4),
    "plates": dict(epochs=25, batch_size=32, lr=2e-3, readers=2, low_res=0.5, format_weight=0.7,
                   det_epochs=40, det_batch_size=16, det_lr=3e-3, refine_epochs=12),
}
STAGES = ("read", "detect", "both")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_recipe_parser("hw_plates.train", __doc__.split("\n")[0], RECIPES, "plates")
    group = parser.add_argument_group("plates")
    group.add_argument("--stage", choices=STAGES, default="both", help="what to train")
    group.add_argument("--arch", choices=READER_ARCHS, default="crnn_small", help="the reader's CNN trunk")
    group.add_argument("--weights", choices=("none", "imagenet"), default="none",
                       help="crnn_resnet18 only: start from torchvision's ImageNet weights (a download)")
    group.add_argument("--channels", type=cli.int_at_least(4), default=16, help="crnn_small: channels of the first stage")
    group.add_argument("--hidden", type=cli.int_at_least(4), default=128, help="GRU units per direction")
    group.add_argument("--height", type=cli.positive_int, default=32, help="crop height fed to the reader (multiple of 16)")
    group.add_argument("--width", type=cli.positive_int, default=128, help="crop width fed to the reader (multiple of 4)")
    group.add_argument("--alphabet", default=DEFAULT_ALPHABET, help="the characters plates may hold")
    group.add_argument("--beam-width", type=cli.positive_int, default=1,
                       help="test decoding: 1 greedy, more: prefix beam search")
    group.add_argument("--no-augment", action="store_true", help="train on the crops as they are")
    group.add_argument("--cut-repeats", type=cli.nonneg_int, default=3,
                       help="the reader also trains (and is validated) on the plates cut from the photos at their "
                            "true boxes with detector-like box noise, each train plate this many times per epoch; "
                            "0: crops only")
    group.add_argument("--readers", type=cli.positive_int, default=None,
                       help="readers trained (seeds --seed, --seed + 1, ...) and read with as one: each reads, and "
                            "the text they find most likely on average is kept (hw_plates.models.ReaderEnsemble); "
                            "None: the recipe's")
    group.add_argument("--low-res", type=cli.probability, default=None,
                       help="share of the training crops first shrunk to the size a plate has in a photo "
                            "(hw_plates.data.at_photo_resolution), as the pipeline's cuts are; None: the recipe's")
    group.add_argument("--format-weight", type=cli.nonneg_float, default=None,
                       help="read with the plate formats of the training texts (hw_plates.formats): candidates of "
                            "the frequent letter/digit shapes join the readers' own texts, and each text scores its "
                            "log-likelihood plus this times the log-share of its shape; 0: without; None: the "
                            "recipe's (0 for the built-in random texts, which have no format)")
    group.add_argument("--format-min-count", type=cli.positive_int, default=2,
                       help="shapes seen in fewer training texts propose no candidates")
    group.add_argument("--n-rendered", type=cli.int_at_least(10), default=800, help="number of built-in rendered plates")
    group.add_argument("--n-scenes", type=cli.int_at_least(10), default=300,
                       help="number of built-in photos (rendered plates pasted into scenes)")
    det = parser.add_argument_group("detector (--stage detect/both)")
    det.add_argument("--det-epochs", type=cli.positive_int, default=None, help="epochs; None: the recipe's")
    det.add_argument("--det-batch-size", type=cli.positive_int, default=None, help="batch size; None: the recipe's")
    det.add_argument("--det-lr", type=cli.positive_float, default=None, help="learning rate; None: the recipe's")
    det.add_argument("--det-size", type=cli.int_at_least(64), default=384,
                     help="photos are squashed to this square side (multiple of 32)")
    det.add_argument("--det-crop", type=cli.int_at_least(0), default=0,
                     help="train on random crops of this side (a multiple of 32, at most --det-size) of the squashed "
                          "photos, so that plates keep their --det-size scale at a smaller input's cost; 0: whole photos")
    det.add_argument("--det-mosaic", type=cli.probability, default=0.0,
                     help="share of the detector's training samples that are mosaics of four photos' tiles "
                          "(core.detection.data.DetectionDataset)")
    det.add_argument("--det-width", type=cli.int_at_least(4), default=16, help="channels of the detector's first stage")
    det.add_argument("--margin", type=cli.nonneg_float, default=0.0,
                     help="plates are cut with this fraction of their box height added on every side: the boxes "
                          "found, and the true boxes of the reader's training and test cuts")
    det.add_argument("--det-max-scale", type=cli.positive_float, default=1.4,
                     help="training zooms each photo by a random factor from 0.6 to this (plates near the camera "
                          "are larger than most)")
    det.add_argument("--det-ema", type=cli.nonneg_float, default=0.0,
                     help="validate, select and keep an exponential moving average of the detector's weights with "
                          "this decay per step (core.callbacks.EMA); 0: the trained weights")
    det.add_argument("--no-flip", action="store_true",
                     help="detect without the test-time flip (by default each photo's heat map is averaged with its "
                          "mirror image's)")
    det.add_argument("--views", default="five",
                     help="the cuts each found plate is read in, the text likeliest over all of them kept "
                          "(hw_plates.task.read_boxes): 'five' (the box, 5 %% wider, 4 %% of its width to the left "
                          "and to the right, 10 %% taller: hw_plates.task.FIVE_VIEWS), 'box' (the box as found), or "
                          "views 'L,R,T,B;...' (fractions of the box's width or height added on the left, right, top "
                          "and bottom)")
    det.add_argument("--refine-rounds", type=cli.nonneg_int, default=2,
                     help="a box refiner is trained after the detector (hw_plates.refine) and moves each box it "
                          "finds onto its plate this many times; 0: no refiner, the boxes as found")
    det.add_argument("--refine-epochs", type=cli.positive_int, default=None,
                     help="the refiner's epochs (each training plate 16 times with fresh edge noise); None: the "
                          "recipe's")
    det.add_argument("--score-threshold", type=cli.probability, default=0.3,
                     help="end to end: detections scoring less are not read")
    group.add_argument("--select", choices=("best", "last"), default="best",
                       help="the weights each stage keeps (in model.pt): its best epoch (best.pt: val exact for the "
                            "reader, val map50 for the detector) or its last")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Alphabet:
    """Refuse option values that the types alone cannot check, with one argparse-style line."""
    if args.resume and args.stage == "both":
        parser.error("--resume continues one stage: give --stage read or --stage detect with it")
    if args.resume and args.stage == "read" and args.readers != 1:
        parser.error("--resume continues one reader: give --readers 1 with --stage read")
    if args.det_size % 32:
        parser.error(f"--det-size must be a multiple of 32, got {args.det_size}")
    if args.det_crop % 32 or args.det_crop > args.det_size:
        parser.error(f"--det-crop must be a multiple of 32 no larger than --det-size, got {args.det_crop}")
    if args.height % 16 or args.width % 4:
        parser.error(f"--height must be a multiple of 16 and --width of 4, got {args.height}x{args.width}")
    args.views = parse_views(parser, args.views)
    if args.det_max_scale < 0.6:
        parser.error(f"--det-max-scale must be at least 0.6, got {args.det_max_scale}")
    if args.det_ema >= 1:
        parser.error(f"--det-ema must be below 1 (a decay per step), got {args.det_ema}")
    if args.weights == "imagenet" and args.arch != "crnn_resnet18":
        parser.error("--weights imagenet needs --arch crnn_resnet18")
    try:
        return Alphabet(args.alphabet)
    except ValueError as exc:
        parser.error(f"--alphabet: {exc}")


def parse_views(parser: argparse.ArgumentParser, text: str) -> list[tuple[float, ...]]:
    """``--views``: 'five', 'box', or 'L,R,T,B;...' (each fraction above -0.5, so a view keeps
    part of the box)."""
    named = {"five": FIVE_VIEWS, "box": BOX_VIEW}
    if text in named:
        return [tuple(view) for view in named[text]]
    try:
        views = [tuple(float(f) for f in part.split(",")) for part in text.split(";")]
    except ValueError:
        parser.error(f"--views: expected 'five', 'box' or views 'L,R,T,B;...' of numbers, got {text!r}")
    if any(len(view) != 4 for view in views):
        parser.error(f"--views: each view has 4 fractions (left, right, top, bottom), got {text!r}")
    if any(f <= -0.5 for view in views for f in view):
        parser.error(f"--views: fractions must be above -0.5, got {text!r}")
    return views


def load_data(args, alphabet: Alphabet) -> tuple[CropSet, list[Photo], bool]:
    """The crops and the photos (each only if the stage needs them), and whether they are built in."""
    source = resolve_data_root("plates", args.data_dir, builtin="built-in rendered plates (random texts)")
    crops, photos = CropSet([], [], [], [], ""), []
    if source.builtin:
        n_crops = args.n_rendered if args.stage != "detect" else 0
        n_photos = args.n_scenes if args.stage != "read" or args.cut_repeats else 0
        crops, photos = make_rendered_plates(n_crops, n_photos, alphabet, args.height, args.width, seed=args.seed)
    else:
        if args.stage != "detect":
            crops = load_crops(source.root, alphabet, args.height, args.width)
        if args.stage != "read" or args.cut_repeats:
            photos = load_photos(source.root, alphabet)
    if args.stage != "detect":
        echo(f"crops: {crops.description}; split by plate text: "
             + " / ".join(f"{len(crops.split(s))} {s}" for s in ("train", "val", "test")))
    if photos:
        echo(f"photos: {len(photos)}; split by plate text: "
             + " / ".join(f"{sum(p.split == s for p in photos)} {s}" for s in ("train", "val", "test")))
    return crops, photos, source.builtin


def reader_datasets(args, crops: CropSet, photos: list[Photo]) -> tuple[Dataset, Dataset]:
    """The reader's train and val sets: the crops of each split, and with ``--cut-repeats`` the
    plates cut from the same split's photos with box noise (fresh draws in training, fixed in val)."""
    train = [CropDataset(crops.split("train"), augment=not args.no_augment, seed=args.seed, low_res=args.low_res)]
    val = [CropDataset(crops.split("val"))]
    if args.cut_repeats and photos:
        height, width = args.height, args.width
        train.append(PhotoCutDataset([p for p in photos if p.split == "train"], height, width,
                                     augment=not args.no_augment, repeats=args.cut_repeats, seed=args.seed,
                                     margin=args.margin))
        val.append(PhotoCutDataset([p for p in photos if p.split == "val"], height, width, seed=args.seed,
                                   margin=args.margin))
        echo(f"reader: {len(train[0])} train crops + {len(train[1])} noisy photo cuts per epoch; "
             f"val {len(val[0])} crops + {len(val[1])} cuts")
    return ConcatDataset(train), ConcatDataset(val)


def train_reader(args, crops: CropSet, photos: list[Photo], run: runs.RunDir) -> tuple[CRNN | ReaderEnsemble, dict]:
    """Fit ``--readers`` CRNNs on the train crops (and photo cuts, :func:`reader_datasets`), the
    k-th (from 0) with seed ``--seed + k`` (its initial weights, data order and augmentation) in
    ``reader/`` (the first) or ``reader<k+1>/``. Returns the reader (one CRNN, or the
    :class:`ReaderEnsemble` of them) with the weights ``--select`` picks for each (the best
    epoch by val exact, or the last) in eval mode, and its numbers."""
    train, val = reader_datasets(args, crops, photos)
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                              collate_fn=collate_crops, drop_last=len(train) > args.batch_size)
    val_loader = DataLoader(val, batch_size=64, num_workers=args.num_workers, collate_fn=collate_crops)
    members, epochs, start = [], 0, time.perf_counter()
    for k in range(args.readers):
        folder = "reader" if k == 0 else f"reader{k + 1}"
        torch.manual_seed(args.seed + k)
        model = CRNN(args.alphabet, args.arch, args.height, args.channels, args.hidden,
                     weights=None if args.weights == "none" else args.weights, width=args.width)
        echo(f"reader{'' if args.readers == 1 else f' {k + 1} of {args.readers}'}: {args.arch}, "
             f"{count_parameters(model):,} parameters, input {args.height}x{args.width}, {args.width // 4} frames")
        task = ReaderTask(model, lr=args.lr)
        trainer = cli.build_trainer(args, run_dir=run / folder, monitor="val_exact", mode="max", seed=args.seed + k,
                                    callbacks=[run.start_callback(args)] if k == 0 else [])
        history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
        load_checkpoint(run / folder / f"{args.select}.pt", task)
        plot_history(run / folder / "history.csv", run.plots / f"{folder}_history.png",
                     title=f"{folder} ({args.arch})")
        members.append(model.eval())
        epochs += len(history)
    reader = make_reader(members)
    texts = crops.split("train").texts + [t for p in photos if p.split == "train" for t in p.texts]
    reader.formats = PlateFormats.from_texts(texts, args.format_weight, args.format_min_count)
    if reader.formats.active:
        common = ", ".join(f"{shape} {n}" for shape, n in list(reader.formats.counts.items())[:5])
        echo(f"formats: {len(reader.formats.counts)} letter/digit shapes in {reader.formats.total} training texts "
             f"(most common: {common}); read with weight {args.format_weight}")
    return reader, {"reader_epochs": epochs, "reader_seconds": round(time.perf_counter() - start, 1),
                    "reader_parameters": count_parameters(reader)}


def train_detector(args, photos: list[Photo], run: runs.RunDir, start_run: bool):
    """Fit the plate CenterNet on the train photos; returns it with the weights ``--select``
    picks (the best epoch by val map50, or the last) in eval mode, and its numbers."""
    train = PlateDetectionDataset([p for p in photos if p.split == "train"], args.det_size, train=True,
                                  scale=(0.6, args.det_max_scale), crop=args.det_crop or None, mosaic=args.det_mosaic)
    val = PlateDetectionDataset([p for p in photos if p.split == "val"], args.det_size)
    train_loader = DataLoader(train, batch_size=args.det_batch_size, shuffle=True, num_workers=args.num_workers,
                              collate_fn=collate, drop_last=len(train) > args.det_batch_size)
    val_loader = DataLoader(val, batch_size=args.det_batch_size, num_workers=args.num_workers, collate_fn=collate)
    torch.manual_seed(args.seed)
    model = PlateNet(args.det_width)
    echo(f"detector: CenterNet (PlateNet width {args.det_width}), {count_parameters(model):,} parameters, "
         f"input {args.det_size}x{args.det_size}, heat map stride {model.stride}")
    task = CenterNetTask(model, lr=args.det_lr, topk=10)
    callbacks = ([run.start_callback(args)] if start_run else []) + ([EMA(args.det_ema)] if args.det_ema else [])
    trainer = cli.build_trainer(args, run_dir=run / "detector", monitor="val_map50", mode="max",
                                max_epochs=args.det_epochs, callbacks=callbacks)
    start = time.perf_counter()
    history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
    load_checkpoint(run / "detector" / f"{args.select}.pt", task)
    plot_history(run / "detector" / "history.csv", run.plots / "detector_history.png", title="detector (CenterNet)")
    return model.eval(), {"detector_epochs": len(history), "detector_seconds": round(time.perf_counter() - start, 1),
                          "detector_parameters": count_parameters(model)}


def train_refiner(args, photos: list[Photo], run: runs.RunDir) -> tuple[BoxRefiner, dict]:
    """Fit the box refiner on the train photos' true boxes with edge noise (each plate 16 times
    an epoch), validated on the val photos' (4 fixed draws each); returns it with the weights
    ``--select`` picks (the best epoch by val edge error, or the last) in eval mode, and its
    numbers."""
    torch.manual_seed(args.seed)
    model = BoxRefiner()
    train = RefineDataset([p for p in photos if p.split == "train"], model, augment=True, repeats=16)
    val = RefineDataset([p for p in photos if p.split == "val"], model, repeats=4, seed=args.seed)
    train_loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=args.num_workers,
                              collate_fn=collate_windows, drop_last=len(train) > 64)
    val_loader = DataLoader(val, batch_size=64, num_workers=args.num_workers, collate_fn=collate_windows)
    echo(f"refiner: {count_parameters(model):,} parameters, windows {model.window[0]}x{model.window[1]} a box's "
         f"size at {model.input_size[0]}x{model.input_size[1]} px; {len(train)} train / {len(val)} val windows")
    trainer = cli.build_trainer(args, run_dir=run / "refiner", monitor="val_edge_error", mode="min",
                                max_epochs=args.refine_epochs)
    task, start = RefinerTask(model), time.perf_counter()
    history = trainer.fit(task, train_loader, val_loader)
    load_checkpoint(run / "refiner" / f"{args.select}.pt", task)
    plot_history(run / "refiner" / "history.csv", run.plots / "refiner_history.png", title="box refiner")
    return model.eval(), {"refiner_epochs": len(history), "refiner_seconds": round(time.perf_counter() - start, 1),
                          "refiner_parameters": count_parameters(model)}


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    alphabet = check_args(parser, args)
    crops, photos, builtin = load_data(args, alphabet)
    recipe = cli.apply_recipe(args, RECIPES["built-in" if builtin else "plates"])
    echo("recipe: " + "  ".join(f"{k}={v}" for k, v in recipe.items()) + f"  stage={args.stage}")
    run = runs.RunDir.reserve("hw_plates", args)

    metrics, reader, detector, refiner = {}, None, None, None
    if args.stage in ("read", "both"):
        reader, numbers = train_reader(args, crops, photos, run)
        test = crops.split("test")
        scores, readings = crop_metrics(reader, test, args.beam_width)
        metrics.update(numbers, **{f"test_{k}": v for k, v in scores.items()})
        if photos:
            metrics.update({f"test_{k}": v for k, v in cut_metrics(
                reader, [p for p in photos if p.split == "test"], test, args.beam_width, margin=args.margin).items()})
        worst_readings_figure(test, readings, run.plots / "worst_readings.png")
    if args.stage in ("detect", "both"):
        detector, numbers = train_detector(args, photos, run, start_run=reader is None)
        metrics.update(numbers)
        if args.refine_rounds:
            refiner, numbers = train_refiner(args, photos, run)
            metrics.update(numbers)
        test_photos = [p for p in photos if p.split == "test"]
        metrics.update({f"test_{k}": v for k, v in detector_metrics(
            detector, test_photos, args.det_size, not args.no_flip, refiner, args.refine_rounds).items()})
    if reader is not None and detector is not None:
        scores, rows = end_to_end(detector, reader, test_photos, args.det_size, args.margin, args.score_threshold,
                                  args.beam_width, flip=not args.no_flip, views=args.views, refiner=refiner,
                                  rounds=args.refine_rounds)
        metrics.update({f"test_{k}": v for k, v in scores.items()})
        worst_photos_figure(rows, run.plots / "worst_photos.png")
    save_plate_model(run, reader, reader_config(args, reader), detector, detector_config(args), detection_settings(args),
                     refiner)
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


def reader_config(args, reader: CRNN | ReaderEnsemble | None = None) -> dict:
    """What rebuilds the reader, beside its alphabet, and the plate formats it reads with."""
    return {"arch": args.arch, "height": args.height, "width": args.width, "channels": args.channels,
            "hidden": args.hidden, "members": args.readers,
            "formats": reader.formats.to_dict() if reader is not None and reader.formats is not None else None}


def detector_config(args) -> dict:
    """What rebuilds the detector."""
    return {"width": args.det_width}


def detection_settings(args) -> dict:
    """How the detector is used: input size, the margin plates are cut with, the score threshold,
    the test-time flip, the views plates are read in, the refiner's rounds."""
    return {"size": args.det_size, "margin": args.margin, "score_threshold": args.score_threshold,
            "flip": not args.no_flip, "views": [list(view) for view in args.views], "refine_rounds": args.refine_rounds}


if __name__ == "__main__":
    cli.run_command(main)
