"""Train CenterNet to find heads with and without hard hats (HW8).

    python -m hw_detection.train                                   # built-in scenes, CPU minutes
    python -m hw_detection.train --data-dir PATH/TO/hardhat        # Kaggle VOC layout
    python -m hw_detection.train --backend mmdet --data-dir ...    # MMDetection 3.3's CenterNet

The native backend (``torch``) is CenterNet with a ResNet-18 backbone (random init unless
``--weights imagenet``), trained by core.Trainer with AdamW and a one-cycle schedule on
box-aware augmented images (with real data, half of them mosaics of four images' tiles,
``--mosaic``); ``mmdet`` configures MMDetection's CenterNet the same way and
trains it with mmengine's Runner. Both are scored by the same code on the validation split:
mAP@0.5 (``map50``), COCO mAP (``map``) and per-class precision / recall / F1 at IoU 0.5.
On a CPU with native bfloat16 (:func:`core.device.native_bf16`) ``--precision auto`` trains
the native backend under bf16 autocast; with real data it keeps an exponential moving
average of the weights (``--ema``), which is what it scores and saves.
Sizes, epochs, batch and LR default to a recipe for the data in use (printed at the start);
with real data and neither ``--epochs`` nor ``--time-limit``, the native backend fits its epochs
and LR schedule into 17 minutes (``--time-limit 17``), so the whole command takes under 20
minutes. The run folder gets ``model.pt`` (:mod:`hw_detection.models`: the network of either
backend, its classes and input size), which evaluate and predict read.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from core import cli, runs
from core.callbacks import EMA
from core.checkpoint import load_checkpoint
from core.console import echo
from core.device import bf16_where_native
from core.errors import UserError
from core.loggers import log_run_images
from core.detection.centernet import CenterNetTask
from core.detection.data import DetectionDataset, collate
from core.detection.evaluate import detection_metrics
from core.plots import box_overlays, plot_history

from .data import CLASSES, DetectionData, classes_option, find_data, read_data, split_indices
from .models import build_model, make_detector, model_config, save_detector

# with real data and no --epochs, the native backend's training fits itself to this many minutes
# (core.Trainer's --time-limit: epochs and LR schedule sized from the first epoch's time)
REAL_DATA_MINUTES = 17.0
RECIPES = {
    "built-in": dict(size=128, crop=0, mosaic=0.0, epochs=15, batch_size=8, lr=2e-3, ema=0.0),
    "hardhat": dict(size=256, crop=0, mosaic=0.5, epochs=40, batch_size=4, lr=2e-3, ema=0.995),
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_recipe_parser("hw_detection.train", __doc__.split("\n")[0], RECIPES, "hardhat")
    parser.epilog += (f"; with real data, --backend torch and neither --epochs nor --time-limit, training "
                      f"stops after {REAL_DATA_MINUTES:g} minutes (--time-limit {REAL_DATA_MINUTES:g}): the "
                      "epochs and the LR schedule are fitted to that time")
    group = parser.add_argument_group("detection")
    group.add_argument("--backend", choices=("torch", "mmdet"), default="torch",
                       help="torch: native CenterNet; mmdet: MMDetection 3.3 (needs the mmdet extra)")
    group.add_argument("--classes", type=classes_option, default=",".join(CLASSES),
                       help="classes to detect, comma-separated (the data also has person)")
    group.add_argument("--size", type=cli.int_at_least(64), default=None,
                       help="square input side, a multiple of 32; None: the recipe's")
    group.add_argument("--crop", type=cli.int_at_least(0), default=None,
                       help="native backend: train on random crops of this side (a multiple of 32, at most --size) "
                            "of the --size px images, so that objects keep their --size scale at the cost of a smaller "
                            "input; 0: whole images; None: the recipe's")
    group.add_argument("--mosaic", type=cli.probability, default=None,
                       help="native backend: share of training samples that are mosaics of four images' tiles "
                            "(core.detection.data.DetectionDataset); None: the recipe's")
    group.add_argument("--dcn", action="store_true", help="deformable convolutions (DCNv2) in the neck")
    group.add_argument("--no-skips", action="store_true",
                       help="no skip connections from the backbone into the neck "
                            "(MMDetection's CTResNetNeck exactly; learns much more slowly from scratch)")
    group.add_argument("--weights", choices=("imagenet",), default=None,
                       help="ImageNet weights for the backbone (a download); default random init")
    group.add_argument("--n-images", type=cli.int_at_least(4), default=240, help="number of built-in scenes")
    group.add_argument("--val-fraction", type=cli.probability, default=0.15,
                       help="share of the images kept for validation")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")
    group.add_argument("--ema", type=cli.nonneg_float, default=None,
                       help="native backend: keep (and score) an exponential moving average of the weights with "
                            "this decay per step (core.callbacks.EMA); 0: the trained weights; None: the recipe's")
    group.add_argument("--flip", action="store_true",
                       help="native backend: detect with the test-time flip (the heat map averaged with the mirror "
                            "image's)")
    group.add_argument("--score-threshold", type=cli.probability, default=0.3,
                       help="detections scoring below this are not counted in precision/recall/F1 or drawn")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option values the types cannot check, with one argparse-style line, before any work."""
    if args.size is not None and args.size % 32:
        parser.error(f"argument --size: expected a multiple of 32, got {args.size}")
    if args.crop and (args.crop % 32 or (args.size is not None and args.crop > args.size)):
        parser.error(f"argument --crop: expected a multiple of 32 no larger than --size, got {args.crop}")
    if args.ema is not None and args.ema >= 1:
        parser.error(f"argument --ema: expected a decay below 1, got {args.ema}")
    if not 0 < args.val_fraction < 1:
        parser.error(f"argument --val-fraction: expected a share between 0 and 1 (exclusive), got {args.val_fraction}")


def load_data(args: argparse.Namespace) -> tuple[DetectionData, dict]:
    """The data set (announced in one line) and the recipe filled into ``args``."""
    source = find_data(args.data_dir)
    recipe = dict(RECIPES["built-in" if source.builtin else "hardhat"])
    if not source.builtin and args.epochs is None and args.time_limit is None and args.backend == "torch":
        args.time_limit = recipe["time_limit"] = REAL_DATA_MINUTES
    cli.apply_recipe(args, recipe)
    if args.crop > args.size:
        raise UserError(f"--crop {args.crop} is larger than --size {args.size}: a crop is cut from the --size px image")
    if args.backend == "torch" and bf16_where_native(args.precision, args.device) != args.precision:
        args.precision = recipe["precision"] = "bf16"  # bench/detection.py: a step in less than half the time
    data = read_data(source, tuple(args.classes.split(",")), args.n_images, args.size)
    echo(f"dataset: {data.description}: {data.report()}")
    return data, {key: getattr(args, key) for key in recipe}


def train_native(args, train: DetectionData, val: DetectionData, run: runs.RunDir) -> tuple[torch.nn.Module, list, str]:
    """core.Trainer on CenterNet; returns the last epoch's network, the history and the device."""
    train_set = DetectionDataset(train.samples, args.size, train=True, crop=args.crop or None, mosaic=args.mosaic)
    train_loader = DataLoader(train_set, batch_size=args.batch_size,
                              shuffle=True, num_workers=args.num_workers, collate_fn=collate,
                              drop_last=len(train) > args.batch_size)
    val_loader = DataLoader(DetectionDataset(val.samples, args.size), batch_size=args.batch_size,
                            num_workers=args.num_workers, collate_fn=collate)
    torch.manual_seed(args.seed)
    model = build_model(config_of(args, train), weights=args.weights)
    if not torch.cuda.is_available():
        model.to(memory_format=torch.channels_last)
    task = CenterNetTask(model, lr=args.lr)  # one-cycle over trainer.estimated_stepping_batches
    callbacks = [run.start_callback(args)] + ([EMA(args.ema)] if args.ema else [])
    trainer = cli.build_trainer(args, run_dir=run.path, monitor="val_map50", mode="max", callbacks=callbacks)
    history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
    load_checkpoint(run / "last.pt", task)  # the one-cycle schedule ends at a tiny LR: keep the last (its EMA if kept)
    return task.model, history, trainer.device


def config_of(args: argparse.Namespace, data: DetectionData) -> dict:
    """The model file's ``config`` for these options (:func:`hw_detection.models.model_config`)."""
    return model_config(args.backend, len(data.class_names), dcn=args.dcn, skips=not args.no_skips)


def evaluate(detector, data: DetectionData, score_threshold: float) -> tuple[dict, list, list]:
    """Metrics of ``detector`` on every image of ``data`` (in the images' own pixels)."""
    arrays = [s.load() for s in data.samples]
    predictions = detector.predict(arrays)
    targets = [{"boxes": torch.as_tensor(s.boxes), "labels": torch.as_tensor(s.labels)} for s in data.samples]
    return detection_metrics(predictions, targets, data.class_names, score_threshold), arrays, predictions


def write_figures(run: runs.RunDir, data: DetectionData, arrays: list, predictions: list, score_threshold: float,
                  name: str = "predictions.png", n: int = 6) -> None:
    n = min(n, len(data))
    truths = [{"boxes": s.boxes, "labels": s.labels} for s in data.samples[:n]]
    box_overlays(arrays[:n], truths, predictions[:n], run.plots / name, data.class_names,
                 [s.name for s in data.samples[:n]], score_threshold=score_threshold)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    check_args(parser, args)
    data, recipe = load_data(args)
    train_ix, val_ix = split_indices(len(data), args.val_fraction, args.split_seed)
    train, val = data.subset(train_ix), data.subset(val_ix)
    echo(f"recipe: {'  '.join(f'{k}={v}' for k, v in recipe.items())}  backend={args.backend}  dcn={args.dcn}; "
         f"split: {len(train)} train / {len(val)} val (split seed {args.split_seed})")
    run = runs.RunDir.reserve("hw_detection", args)
    start = time.perf_counter()
    if args.backend == "mmdet":
        from .mmdet_backend import train_mmdet

        model, history = train_mmdet(args, train, val, run)
        device = "cpu"
    else:
        model, history, device = train_native(args, train, val, run)
    train_seconds = time.perf_counter() - start
    flip = args.backend == "torch" and args.flip
    save_detector(run, model, config_of(args, train), train.class_names, args.size, args.score_threshold, flip)
    detector = make_detector(args.backend, model, args.size, train.class_names, device, flip)
    metrics, arrays, predictions = evaluate(detector, val, args.score_threshold)
    metrics = {"val_images": len(val), "epochs": len(history), "train_seconds": round(train_seconds, 1),
               **{k: round(v, 4) for k, v in metrics.items()}}
    run.save_metrics(metrics)
    if (run / "history.csv").is_file():
        plot_history(run / "history.csv", run.plots / "history.png", title=f"CenterNet ({args.backend})")
    write_figures(run, val, arrays, predictions, args.score_threshold)
    log_run_images(args, run.path, {"predictions": run.plots / "predictions.png"}, step=len(history))
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
