"""Train SegNet, UNet or UNet2 on PH2 skin lesions (or the built-in lesion-like images).

    python -m hw_segment.train                              # UNet, dice+bce, built-in data, CPU minutes
    python -m hw_segment.train --model segnet --loss focal --data-dir PATH/TO/PH2

Sizes, epochs, batch size, width and learning rate default to a recipe for the data in use
(printed at the start); any of them given on the command line wins. The recipe: AdamW with a
one-cycle LR schedule (warm-up, then cosine decay to almost 0), flips / 90-degree rotations /
light colour jitter on the training images, dice+bce loss, and the last epoch's weights as
the model (``--select``). The run folder gets history.csv, best.pt/last.pt (for ``--resume``),
model.pt (the selected weights: what ``hw_segment.load_model``, evaluate and predict read),
metrics.json (val and test IoU, Dice, the course's iou_pytorch score, time) and plots (curves,
image / truth / prediction overlays of test cases).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from core import cli, runs
from core.data import resolve_data_root
from core.console import echo
from core.loggers import log_run_images
from core.errors import UserError
from core.inference import count_parameters, model_outputs
from core.plots import mask_overlays, plot_history
from core.checkpoint import load_checkpoint

from .data import SegmentationData, SegmentationDataset, load_ph2, make_lesions, split_indices
from .models import MODEL_NAMES, SMP_UNET, build_from_config, check_input_size, model_config, save_run_model
from .task import SegmentationTask, score_logits

DEFAULT_LOSS = "dice+bce"
# recipe defaults: built-in data is sized to train on a CPU in a couple of minutes; PH2 follows
# the course (256 px, batch 25), but with fewer than 100 training images the batch shrinks so
# that an epoch still has 4 optimiser steps (see recipe_batch_size)
RECIPES = {
    "built-in": dict(size=64, epochs=12, batch_size=16, lr=3e-3, width=16),
    "ph2": dict(size=256, epochs=40, batch_size=25, lr=1e-3, width=16),
}


def recipe_batch_size(n_train: int, course_batch: int = 25, min_steps: int = 4) -> int:
    """The course's batch of 25, made smaller for small training sets (20 images -> 5)."""
    return max(2, min(course_batch, n_train // min_steps))


def build_parser() -> argparse.ArgumentParser:
    from core.losses import LOSS_NAMES

    parser = cli.make_parser("hw_segment.train", __doc__.split("\n")[0])
    parser.epilog = "options left at None take the recipe's value: " + "; ".join(
        f"{data}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()) for data, recipe in RECIPES.items()) + \
        " (PH2 batch: 25, smaller when an epoch would have fewer than 4 steps)"
    cli.add_data_args(parser, "ph2")
    cli.add_training_args(parser, epochs=None, batch_size=None, lr=None)  # None: the recipe's
    group = parser.add_argument_group("segmentation")
    group.add_argument("--model", choices=MODEL_NAMES + (SMP_UNET,), default="unet",
                       help=f"network; {SMP_UNET} is segmentation_models_pytorch's Unet(resnet18), for comparison")
    group.add_argument("--loss", default=DEFAULT_LOSS,
                       help=f"one of {', '.join(LOSS_NAMES)}, or a weighted sum such as 0.5*dice+bce")
    group.add_argument("--size", type=cli.positive_int, default=None,
                       help="image side in pixels, a multiple of 16; None: the recipe's (64 built-in, 256 PH2)")
    group.add_argument("--width", type=cli.positive_int, default=None,
                       help="channels of the first block; None: the recipe's")
    group.add_argument("--n-images", type=cli.int_at_least(4), default=400, help="number of built-in images")
    group.add_argument("--no-augment", action="store_true", help="no flips/rotations/colour jitter")
    group.add_argument("--plain-bottleneck", action="store_true",
                       help="UNet/UNet2: the course's two plain convs in the bottleneck instead of dilated ones")
    group.add_argument("--no-standardize", action="store_true",
                       help="feed the images as they are, not standardised per image and channel")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    group.add_argument("--select", choices=("last", "best"), default="last",
                       help="which weights the run reports and keeps as its model: the last epoch's (the "
                            "one-cycle schedule ends at a tiny LR) or the best val IoU's (best.pt)")
    return parser


def apply_recipe(args: argparse.Namespace, builtin: bool, n_train: int) -> dict:
    """Fill the options left at None from the recipe for this data; return the recipe used."""
    recipe = dict(RECIPES["built-in" if builtin else "ph2"])
    if not builtin:
        recipe["batch_size"] = recipe_batch_size(n_train, recipe["batch_size"])
    return cli.apply_recipe(args, recipe)


def load_data(args: argparse.Namespace, builtin: bool, root) -> SegmentationData:
    if builtin:
        return make_lesions(args.n_images, args.size, seed=args.split_seed)
    return load_ph2(root, args.size)


def split_data(data: SegmentationData, split_seed: int) -> tuple[SegmentationData, ...]:
    """Train, val and test subsets (see :func:`hw_segment.data.split_indices`)."""
    return tuple(data.subset(ix) for ix in split_indices(len(data), split_seed))


def make_loaders(data: SegmentationData, args) -> tuple[DataLoader, DataLoader, SegmentationData, SegmentationData]:
    train, val, test = split_data(data, args.split_seed)
    echo(f"split: {len(train)} train / {len(val)} val / {len(test)} test (split seed {args.split_seed})")
    train_loader = DataLoader(SegmentationDataset(train, train=not args.no_augment), batch_size=args.batch_size,
                              shuffle=True, num_workers=args.num_workers, drop_last=len(train) > args.batch_size)
    val_loader = DataLoader(SegmentationDataset(val), batch_size=args.batch_size, num_workers=args.num_workers)
    return train_loader, val_loader, val, test


def evaluate_split(model, split: SegmentationData, device) -> dict[str, torch.Tensor]:
    """Per-case iou/dice/score of ``model`` on a whole split."""
    return score_logits(model_outputs(model, split.images, device=device), split.masks)


def main(argv: list[str] | None = None) -> dict:
    from core.losses import get_loss

    args = cli.parse_args(build_parser(), argv)
    try:
        loss_fn = get_loss(args.loss)
    except (ValueError, KeyError) as exc:
        raise UserError(f"--loss {args.loss}: {exc}") from None
    try:
        source = resolve_data_root("ph2", args.data_dir, builtin="built-in procedural lesion images")
        if args.size is None:
            args.size = RECIPES["built-in" if source.builtin else "ph2"]["size"]
        check_input_size(args.size, args.size)
        data = load_data(args, source.builtin, source.root)
        recipe = apply_recipe(args, source.builtin, len(split_indices(len(data), args.split_seed)[0]))
        echo("recipe: " + "  ".join(f"{k}={v}" for k, v in recipe.items()) + f"  model={args.model}  loss={args.loss}")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    echo(f"dataset: {data.description}")
    train_loader, val_loader, val, test = make_loaders(data, args)

    torch.manual_seed(args.seed)
    config = model_config(args)
    model = build_from_config(config)
    echo(f"model: {args.model}, width {args.width}, {count_parameters(model):,} parameters")
    task = SegmentationTask(model, loss_fn, lr=args.lr)  # one-cycle over trainer.estimated_stepping_batches
    run = runs.RunDir.reserve("hw_segment", args)
    trainer = cli.build_trainer(args, run_dir=run.path, monitor="val_iou", mode="max",
                                callbacks=[run.start_callback(args)])
    if trainer.device.type == "cpu":  # channels-last convolutions run faster on CPU (bench/segment.py)
        model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
    train_time = time.perf_counter() - start

    # the run's model; picking the best epoch on a small val set (10 PH2 cases) tends to overfit it
    load_checkpoint(run / f"{args.select}.pt", task)
    save_run_model(run, task.model, config)
    metrics = {"epochs": len(history), "best_epoch": max(history, key=lambda r: r["val_iou"])["epoch"],
               "train_seconds": round(train_time, 1),
               "seconds_per_epoch": round(sum(r["time"] for r in history) / len(history), 2),
               "parameters": count_parameters(model)}
    for name, split in (("val", val), ("test", test)):
        scores = evaluate_split(task.model, split, trainer.device)
        metrics.update({f"{name}_{k}": round(v.mean().item(), 4) for k, v in scores.items()})
        metrics[f"{name}_iou_std"] = round(scores["iou"].std().item(), 4) if len(split) > 1 else 0.0
    run.save_metrics(metrics)
    write_plots(run, task.model, test, trainer.device, title=f"{args.model} / {args.loss}")
    log_run_images(args, run.path, {"predictions": run.plots / "predictions.png"}, step=trainer.epoch)
    run.summary(metrics)
    return metrics


def write_plots(run: runs.RunDir, model, split: SegmentationData, device, title: str, n: int = 6) -> None:
    """Training curves and image / truth / prediction overlays for the first ``n`` cases of ``split``."""
    plot_history(run / "history.csv", run.plots / "history.png", title=title)
    n = min(n, len(split))
    logits = model_outputs(model, split.images[:n], device=device)
    ious = score_logits(logits, split.masks[:n])["iou"]
    titles = [f"{name} IoU {iou:.2f}" for name, iou in zip(split.names[:n], ious.tolist())]
    mask_overlays(split.images[:n], split.masks[:n], (logits > 0).float(), run.plots / "predictions.png", titles)


if __name__ == "__main__":
    cli.run_command(main)
