"""Train the licence-plate reader (a CRNN with CTC) on plate crops.

    python -m hw_plates.train --stage read                     # $DLS_DATA/plates, else rendered plates
    python -m hw_plates.train --stage read --data-dir PATH/TO/plates --beam-width 8

The plates are split by text (hw_plates.data.split_of): 70% train, 10% val (picks the best
epoch), 20% test, never trained on nor tuned on; the reported figures are the test crops'.
Epochs, batch size and learning rate default to a recipe for the data in use (printed at
the start). The run folder gets args.json, reader/history.csv, reader/best.pt and last.pt,
model.pt (the weights and the alphabet, read back with ``torch.load(weights_only=True)``),
metrics.json and plots (curves, the worst test readings).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from core import cli
from core.data import resolve_data_root
from core.device import echo
from core.plots import plot_history
from core.trainer import Trainer, load_checkpoint

from .data import CropDataset, CropSet, collate_crops, load_crops, make_rendered_plates
from .models import CRNN, READER_ARCHS, count_parameters
from .report import crop_metrics, save_model, worst_readings_figure
from .task import ReaderTask, optimizer_steps
from .text import DEFAULT_ALPHABET, Alphabet

RECIPES = {
    "built-in": dict(epochs=12, batch_size=32, lr=2e-3),
    "plates": dict(epochs=30, batch_size=32, lr=2e-3),
}
STAGES = ("read",)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_plates.train", __doc__.split("\n")[0])
    parser.epilog = "options left at None take the recipe's value: " + "; ".join(
        f"{data}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()) for data, recipe in RECIPES.items())
    cli.add_data_args(parser)
    cli.add_training_args(parser, epochs=None, batch_size=None, lr=None)
    group = parser.add_argument_group("plates")
    group.add_argument("--stage", choices=STAGES, default="read", help="what to train")
    group.add_argument("--arch", choices=READER_ARCHS, default="crnn_small", help="the reader's CNN trunk")
    group.add_argument("--weights", choices=("none", "imagenet"), default="none",
                       help="crnn_resnet18 only: start from torchvision's ImageNet weights (a download)")
    group.add_argument("--channels", type=int, default=16, help="crnn_small: channels of the first stage")
    group.add_argument("--hidden", type=int, default=128, help="GRU units per direction")
    group.add_argument("--height", type=int, default=32, help="crop height fed to the reader (multiple of 16)")
    group.add_argument("--width", type=int, default=128, help="crop width fed to the reader (multiple of 4)")
    group.add_argument("--alphabet", default=DEFAULT_ALPHABET, help="the characters plates may hold")
    group.add_argument("--beam-width", type=int, default=1, help="test decoding: 1 greedy, more: prefix beam search")
    group.add_argument("--no-augment", action="store_true", help="train on the crops as they are")
    group.add_argument("--n-rendered", type=int, default=800, help="number of built-in rendered plates")
    group.add_argument("--select", choices=("best", "last"), default="best",
                       help="the weights the run keeps: best val exact (best.pt) or the last epoch's")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Alphabet:
    """Refuse bad option values with one argparse-style line, before any work."""
    for name, low in (("epochs", 1), ("batch_size", 1), ("channels", 4), ("hidden", 4), ("height", 16),
                      ("width", 16), ("beam_width", 1), ("n_rendered", 10)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.height % 16 or args.width % 4:
        parser.error(f"--height must be a multiple of 16 and --width of 4, got {args.height}x{args.width}")
    if args.weights == "imagenet" and args.arch != "crnn_resnet18":
        parser.error("--weights imagenet needs --arch crnn_resnet18")
    try:
        return Alphabet(args.alphabet)
    except ValueError as exc:
        parser.error(f"--alphabet: {exc}")


def load_reader_data(args, alphabet: Alphabet) -> tuple[CropSet, bool]:
    source = resolve_data_root("plates", args.data_dir, builtin="built-in rendered plates (random texts)")
    if source.builtin:
        crops, _ = make_rendered_plates(args.n_rendered, 0, alphabet, args.height, args.width, seed=args.seed)
    else:
        crops = load_crops(source.root, alphabet, args.height, args.width)
    echo(f"dataset: {crops.description}")
    return crops, source.builtin


def apply_recipe(args: argparse.Namespace, builtin: bool) -> dict:
    recipe = RECIPES["built-in" if builtin else "plates"]
    for key, value in recipe.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return {key: getattr(args, key) for key in recipe}


def train_reader(args, crops: CropSet, run: cli.RunDir) -> tuple[CRNN, dict]:
    """Fit the CRNN on the train crops (best epoch by val exact); returns it and its numbers."""
    train, val = crops.split("train"), crops.split("val")
    train_loader = DataLoader(CropDataset(train, augment=not args.no_augment, seed=args.seed),
                              batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                              collate_fn=collate_crops, drop_last=len(train) > args.batch_size)
    val_loader = DataLoader(CropDataset(val), batch_size=64, num_workers=args.num_workers, collate_fn=collate_crops)
    torch.manual_seed(args.seed)
    model = CRNN(args.alphabet, args.arch, args.height, args.channels, args.hidden,
                 weights=None if args.weights == "none" else args.weights)
    echo(f"reader: {args.arch}, {count_parameters(model):,} parameters, input {args.height}x{args.width}, "
         f"{args.width // 4} frames")
    task = ReaderTask(model, lr=args.lr, total_steps=optimizer_steps(len(train_loader), args.epochs,
                                                                      args.limit_batches, args.accumulate))
    trainer = Trainer.from_args(args, run_dir=run / "reader", monitor="val_exact", mode="max")
    start = time.perf_counter()
    history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
    load_checkpoint(run / "reader" / f"{args.select}.pt", task)
    plot_history(run / "reader" / "history.csv", run.plots / "reader_history.png", title=f"reader ({args.arch})")
    return model.eval(), {"reader_epochs": len(history), "reader_seconds": round(time.perf_counter() - start, 1),
                          "reader_parameters": count_parameters(model)}


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    alphabet = check_args(parser, args)
    crops, builtin = load_reader_data(args, alphabet)
    recipe = apply_recipe(args, builtin)
    echo("recipe: " + "  ".join(f"{k}={v}" for k, v in recipe.items()) + f"  stage={args.stage}")
    echo("split by plate text: " + " / ".join(f"{len(crops.split(s))} {s}" for s in ("train", "val", "test"))
         + " crops")
    run = cli.RunDir.create("hw_plates", args)

    reader, metrics = train_reader(args, crops, run)
    test = crops.split("test")
    scores, predictions = crop_metrics(reader, test, args.beam_width)
    metrics.update({f"test_{k}": v for k, v in scores.items()})
    save_model(run / "model.pt", reader=reader, reader_config=reader_config(args))
    worst_readings_figure(test, predictions, run.plots / "worst_readings.png")
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


def reader_config(args) -> dict:
    """What it takes to rebuild the reader (its alphabet travels in its weights)."""
    return {"arch": args.arch, "height": args.height, "width": args.width, "channels": args.channels,
            "hidden": args.hidden}


if __name__ == "__main__":
    cli.run_command(lambda: None if main() else None)
