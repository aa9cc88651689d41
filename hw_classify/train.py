"""Train an image classifier: the Simpsons (HW4), car models, or any image folder.

    python -m hw_classify.train                                        # built-in shapes, CPU, about a minute
    python -m hw_classify.train --data-dir PATH/journey-springfield --weights imagenet   # the course's recipe
    python -m hw_classify.train --data-dir PATH/simpsons --weights none                 # small data, no pretraining

Architecture, size, epochs, augmentation, batch size and LR default to a recipe for the data
and weights in use (printed at the start); any of them given on the command line wins.

- ``pretrained`` (``--weights imagenet`` or a file): the course's MobileNetV2 at 224 px with
  the Dropout(0.2) + Linear head, staged unfreezing ``head:3,half:3,all:4`` (each stage at
  half the previous stage's LR, the backbone at a fifth of the head's: 1e-4 when everything
  trains, the course's fine-tuning LR), light augmentation.
- ``scratch`` (``--weights none``, under 2000 training images): a small ResNet at 96 px
  with strong augmentation, label smoothing and a one-cycle schedule.
- ``scratch-large`` (``--weights none``, 2000 or more): MobileNetV2 at 160 px, one-cycle.
- ``built-in``: the small ResNet at 64 px on the generated shapes.

The run folder gets history.csv, best.pt/last.pt (for ``--resume``), model.pt (the
``--select`` weights, the class names and the preprocessing: what ``hw_classify.load_model``,
predict and submit read), metrics.json, per_class.csv and plots (curves, confusion matrix,
the worst mistakes).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from core import cli, runs
from core.data import ImageClassificationDataset, resolve_data_root, stratified_folds, stratified_split
from core.console import echo
from core.inference import count_parameters
from core.checkpoint import load_checkpoint

from .data import AUGMENTS, LOAD_SCALE, ClassificationData, build_transform, decode_data, load_layout, make_shapes
from .models import build_model, pretrained_state, save_run_model
from .stages import parse_stages, total_epochs
from .task import ClassifyTask, StageSchedule, balanced_class_weights
from .validation import evaluate_and_report

RECIPES = {
    "built-in": dict(arch="small_resnet", size=64, epochs=10, batch_size=32, lr=3e-3, augment="light",
                     label_smoothing=0.0, backbone_mult=1.0),
    "scratch": dict(arch="small_resnet", size=96, epochs=40, batch_size=32, lr=3e-3, augment="strong",
                    label_smoothing=0.1, backbone_mult=1.0),
    "scratch-large": dict(arch="mobilenet_v2", size=160, epochs=30, batch_size=64, lr=2e-3, augment="strong",
                          label_smoothing=0.1, backbone_mult=1.0),
    "pretrained": dict(arch="mobilenet_v2", size=224, stages="head:3,half:3,all:4", batch_size=32, lr=1e-3,
                       augment="light", label_smoothing=0.0, backbone_mult=0.2),
}
SMALL_DATA = 2000


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_recipe_parser("hw_classify.train", __doc__.split("\n")[0], RECIPES, "simpsons")
    group = parser.add_argument_group("classification")
    group.add_argument("--arch", default=None,
                       help="simple_cnn, small_resnet or a torchvision classifier (resnet18, mobilenet_v2, ...)")
    group.add_argument("--weights", default="none",
                       help="none, imagenet (torchvision's weights API) or a state-dict file (read weights_only)")
    group.add_argument("--stages", default=None,
                       help="staged unfreezing, e.g. head:3,half:3,all:4; default all:<epochs> "
                            "(pretrained: head:3,half:3,all:4)")
    group.add_argument("--augment", choices=AUGMENTS, default=None, help="training augmentation strength")
    group.add_argument("--size", type=cli.int_at_least(32), default=None, help="image side in pixels")
    group.add_argument("--width", type=cli.positive_int, default=32, help="small_resnet: channels of the first stage")
    group.add_argument("--weight-decay", type=cli.nonneg_float, default=5e-4, help="AdamW weight decay")
    group.add_argument("--label-smoothing", type=cli.probability, default=None, help="cross-entropy label smoothing")
    group.add_argument("--balance", choices=("none", "sampler", "loss"), default="none",
                       help="class imbalance: a weighted sampler, or a weighted loss (N / (K n_c))")
    group.add_argument("--stage-decay", type=cli.positive_float, default=0.5, help="LR factor from one stage to the next")
    group.add_argument("--backbone-mult", type=cli.positive_float, default=None,
                       help="backbone LR as a share of the head's (discriminative LRs)")
    group.add_argument("--val-fraction", type=fraction, default=0.2, help="share of the labelled images for validation")
    group.add_argument("--split-seed", type=cli.nonneg_int, default=0, help="seed of the stratified train/val split")
    group.add_argument("--folds", type=cli.int_at_least(2), default=None,
                       help="cross-validation: validate on fold --fold of a stratified K-fold split (instead of "
                            "--val-fraction)")
    group.add_argument("--fold", type=cli.nonneg_int, default=0, help="with --folds: which fold validates")
    group.add_argument("--on-corrupt", choices=("skip", "error"), default="skip",
                       help="an unreadable image: skip it (named and counted) or stop with an error")
    group.add_argument("--select", choices=("last", "best"), default="last",
                       help="the run's model: the last epoch's (one-cycle ends at a tiny LR) or best val F1's")
    group.add_argument("--n-per-class", type=cli.int_at_least(5), default=60, help="built-in images per class")
    return parser


def fraction(text: str) -> float:
    """A ``type=`` for a share strictly between 0 and 1."""
    value = cli.positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad option values that need more than one option's type, before any work."""
    if args.label_smoothing is not None and args.label_smoothing >= 1:
        parser.error(f"argument --label-smoothing: expected a number in [0, 1), got {args.label_smoothing}")
    if args.folds is not None and args.fold >= args.folds:
        parser.error(f"argument --fold: expected 0 to {args.folds - 1} with --folds {args.folds}, got {args.fold}")
    if args.stages is not None:
        try:
            parse_stages(args.stages)
        except ValueError as exc:
            parser.error(f"argument --stages: {exc}")


def recipe_name(builtin: bool, weights: str, n_images: int) -> str:
    if builtin and weights == "none":
        return "built-in"
    if weights != "none":
        return "pretrained"
    return "scratch" if n_images < SMALL_DATA else "scratch-large"


def apply_recipe(args: argparse.Namespace, name: str) -> dict:
    """Fill the options left at None from recipe ``name``; the stages and epochs agree."""
    recipe = RECIPES[name]
    cli.apply_recipe(args, recipe, skip=("stages",))
    if args.stages is None:
        args.stages = recipe.get("stages") if args.epochs is None else None
        args.stages = args.stages or f"all:{args.epochs}"
    args.epochs = total_epochs(parse_stages(args.stages))
    if args.dry_run:
        args.stages, args.epochs = "all:1", 1
    return {key: getattr(args, key) for key in ("arch", "size", "stages", "batch_size", "lr", "augment",
                                                "label_smoothing")}


def load_data(args, source) -> ClassificationData:
    if source.builtin:
        return make_shapes(args.n_per_class, round(args.size * LOAD_SCALE), seed=args.split_seed)
    return load_layout(source.root)


def make_loaders(data: ClassificationData, args) -> tuple[DataLoader, DataLoader, ImageClassificationDataset]:
    """Stratified split, datasets over the decoded images, and the train/val loaders."""
    if args.folds:
        cli.check_folds(args.folds, data.train.labels)
        train_ix, val_ix = stratified_folds(data.train.labels, args.folds, args.split_seed)[args.fold]
        how = f"fold {args.fold} of {args.folds}"
    else:
        train_ix, val_ix = stratified_split(data.train.labels, args.val_fraction, args.split_seed)
        how = "stratified"
    echo(f"split: {len(train_ix)} train / {len(val_ix)} val, {how} (split seed {args.split_seed})")
    load = round(args.size * LOAD_SCALE)
    cache = data.train_images

    def dataset(ix, augment):
        images = [cache[i] for i in ix] if cache is not None else None
        return ImageClassificationDataset([data.train.files[i] for i in ix], data.train.labels[ix],
                                          build_transform(args.size, augment, seed=args.seed), images, size=load)

    train_set, val_set = dataset(train_ix, args.augment), dataset(val_ix, "none")
    sampler = None
    if args.balance == "sampler":  # each class drawn equally often on average
        weights = balanced_class_weights(train_set.labels, len(data.classes))[train_set.labels]
        sampler = WeightedRandomSampler(weights.double(), len(train_set), replacement=True)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                              num_workers=args.num_workers, drop_last=len(train_set) > args.batch_size)
    val_loader = DataLoader(val_set, batch_size=2 * args.batch_size, num_workers=args.num_workers)
    return train_loader, val_loader, val_set


def read_images(args, source, data: ClassificationData | None) -> ClassificationData:
    """The labelled images, decoded once at the load size (unreadable ones named and counted)."""
    data = data or load_data(args, source)
    echo(f"dataset: {data.description}")
    data = decode_data(data, round(args.size * LOAD_SCALE), args.on_corrupt)
    if data.skipped:
        echo(f"skipped {len(data.skipped)} unreadable image(s): " +
             "; ".join(f"{p} ({why})" for p, why in data.skipped[:5]) + (" ..." if len(data.skipped) > 5 else ""))
    return data


def build_task(args, data: ClassificationData, train_labels, state) -> ClassifyTask:
    torch.manual_seed(args.seed)
    net = build_model(args.arch, len(data.classes), args.weights, args.size, args.width, state=state)
    echo(f"model: {args.arch}, {count_parameters(net.model):,} parameters")
    class_weights = balanced_class_weights(train_labels, len(data.classes)) if args.balance == "loss" else None
    return ClassifyTask(net.model, net.head, len(data.classes), parse_stages(args.stages), lr=args.lr,
                        weight_decay=args.weight_decay, backbone_mult=args.backbone_mult,
                        stage_decay=args.stage_decay, label_smoothing=args.label_smoothing,
                        class_weights=class_weights)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    check_args(parser, args)
    source = resolve_data_root("simpsons", args.data_dir, builtin="built-in generated shapes")
    data = load_layout(source.root) if not source.builtin else None
    recipe = apply_recipe(args, recipe_name(source.builtin, args.weights, len(data.train) if data else 0))
    state = pretrained_state(args.arch, args.weights)  # before reading the images: offline fails at once
    data = read_images(args, source, data)
    echo("recipe: " + "  ".join(f"{k}={v}" for k, v in recipe.items()) + f"  weights={args.weights}")
    train_loader, val_loader, val_set = make_loaders(data, args)
    task = build_task(args, data, train_loader.dataset.labels, state)

    run = runs.RunDir.reserve("hw_classify", args)
    trainer = cli.build_trainer(args, run_dir=run.path, monitor="val_f1_macro", mode="max",
                                callbacks=[StageSchedule(), run.start_callback(args)])
    if trainer.device.type == "cpu":  # channels-last convolutions: faster train steps on CPU (bench/classify.py)
        task.model.to(memory_format=torch.channels_last)
    start, cpu_start = time.perf_counter(), time.process_time()
    history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
    train_time, cpu_time = time.perf_counter() - start, time.process_time() - cpu_start

    load_checkpoint(run / f"{args.select}.pt", task)
    save_run_model(run, task.model, args, data.classes, load_size=round(args.size * LOAD_SCALE))
    # cpu_seconds: CPU time of all threads, about what an idle machine needs with one thread
    metrics = {"epochs": len(history), "train_seconds": round(train_time, 1), "cpu_seconds": round(cpu_time, 1),
               "seconds_per_epoch": round(sum(r["time"] for r in history) / len(history), 2),
               "parameters": count_parameters(task.model, trainable_only=False),
               "skipped_images": len(data.skipped)}
    metrics.update(evaluate_and_report(run, task.model, val_set, data.classes, trainer.device,
                                       title=f"{args.arch} / {args.weights} / {args.size}px"))
    run.save_metrics(metrics)
    run.summary({k: v for k, v in metrics.items() if not k.startswith("f1_")})
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
