"""Train a DCGAN on faces (the course's FFHQ thumbnails, the shared LFW faces, any image folder).

    python -m hw_gan.train                                  # $DLS_DATA/faces/lfw_gan, else built-in faces
    python -m hw_gan.train --course --data-dir faces_dataset_small

Two recipes (:data:`RECIPES`), both at the course's 64 px; options given explicitly override
them. ``default``: the course's architecture at width 32, batch 64, lr 2e-4, the course's BCE
loss and BatchNorm discriminator, DiffAugment of every image it sees (:mod:`hw_gan.augment`),
an EMA of the weights to sample from, and a generator that upsamples by nearest neighbour and
a 3x3 convolution instead of the course's transposed convolutions (``--upsample``). ``--course``: the course's
plain DCGAN (BCE, BatchNorm, width 64, batch 128, lr 1e-4, 100 epochs). With neither
``--epochs`` nor ``--time-limit`` a run stops after :data:`REAL_DATA_MINUTES` on real data
(:data:`BUILTIN_MINUTES` on the built-in faces). ``--holdout`` faces (drawn with
``--split-seed``) are never trained on; their names go to ``split.json`` and
``hw_gan.evaluate`` compares the samples with them by default.

The run folder gets history.csv (discriminator and generator losses, mean real and fake
scores per epoch), last.pt (for --resume), model.pt (the generator, with the averaged weights
under --ema, for sample, evaluate and predict), plots/samples/epoch_NNN.png (the same fixed
noise, about 48 grids spread over the run), plots/progress.gif, plots/history.png and
metrics.json.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from core import cli, runs
from core.callbacks import EMA
from core.console import echo
from core.device import bf16_where_native
from core.data import InMemoryImages
from core.inference import count_parameters
from core.plots import plot_history

from .augment import POLICIES, parse_policy
from .data import DATASET, SPLIT_FILE, find_source, load_data
from .images import SampleGrids
from .models import HOMEWORK, KIND, UPSAMPLING, Discriminator, Generator, check_image_size, reported_generator
from .task import LOSSES, GANTask


def image_size(text: str) -> int:
    """``--image-size``: a power of two the DCGAN can halve down to 4x4 (16 to 256)."""
    try:
        return check_image_size(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a power of two from 16 to 256 (32, 64, 128), got {text!r}") from None


def probability_below_1(text: str) -> float:
    value = cli.probability(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


# Options left unset take the recipe's value. "default": a data-efficient GAN at the course's
# 64 px, sized to train in the time budget on a CPU; "course": the course's DCGAN exactly.
RECIPES = {
    "default": dict(image_size=64, width=32, batch_size=64, lr=2e-4, epochs=2000, loss="bce",
                    augment="color,translation,cutout", spectral_norm=False, ema=0.999, upsample="nearest"),
    "course": dict(image_size=64, width=64, batch_size=128, lr=1e-4, epochs=100, loss="bce",
                   augment="none", spectral_norm=False, ema=0.0, upsample="transpose"),
}
# with real data and neither --epochs nor --time-limit, training stops after this many minutes
REAL_DATA_MINUTES = 15.0
BUILTIN_MINUTES = 1.0
# kept from the budget for the work after the last batch: the GIF, the averaged generator's
# BatchNorm statistics, model.pt and the plots (about 10 s on 2 cores at 64 px)
FINISH_SECONDS = 20.0


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_recipe_parser("hw_gan.train", __doc__.split("\n")[0], RECIPES, DATASET)
    parser.epilog += (f"; with neither --epochs nor --time-limit, training stops after {REAL_DATA_MINUTES:g} "
                      f"minutes on real data and {BUILTIN_MINUTES:g} on the built-in faces (--time-limit)")
    group = parser.add_argument_group("GAN")
    group.add_argument("--course", action="store_true",
                       help="the course's plain DCGAN: BCE loss, no augmentation, BatchNorm in D, no EMA, "
                            "width 64, batch 128, lr 1e-4 (options given explicitly still apply)")
    group.add_argument("--image-size", type=image_size, default=None,
                       help="image side: a power of two (the course's: 64)")
    group.add_argument("--latent", type=cli.positive_int, default=128, help="size of the generator's latent vector")
    group.add_argument("--width", type=cli.positive_int, default=None, help="channels of the networks' image-side "
                       "block (the course's: 64, 2.77 M discriminator parameters at 64 px)")
    group.add_argument("--upsample", choices=UPSAMPLING, default=None,
                       help="how the generator doubles the side: transpose (the course's 4x4 stride-2 transposed "
                            "convolutions) or nearest (nearest-neighbour upsampling + 3x3 convolution)")
    group.add_argument("--beta1", type=probability_below_1, default=0.5, help="Adam's beta1 (beta2 is 0.999)")
    group.add_argument("--loss", choices=LOSSES, default=None,
                       help="bce: the course's (non-saturating), saturating: the minimax log(1-D(G(z))), hinge")
    group.add_argument("--augment", type=augment_policy, default=None, metavar="OPS",
                       help="DiffAugment of every image D sees: a comma-separated subset of "
                            f"{','.join(POLICIES)}, or none")
    group.add_argument("--r1", type=cli.nonneg_float, default=0.0, metavar="GAMMA",
                       help="weight of the R1 gradient penalty on real images (0: none)")
    group.add_argument("--label-smoothing", type=probability_below_1, default=0.0,
                       help="real target 1 - this in D's BCE (one-sided label smoothing)")
    group.add_argument("--instance-noise", type=cli.nonneg_float, default=0.0,
                       help="std of the noise added to D's inputs, annealed to 0 over the epochs")
    group.add_argument("--spectral-norm", action=argparse.BooleanOptionalAction, default=None,
                       help="spectral norm instead of BatchNorm in D")
    group.add_argument("--ema", type=probability_below_1, default=None, metavar="DECAY",
                       help="sample from an exponential moving average of the generator's weights with this "
                            "decay per step (0: no average)")
    group.add_argument("--no-flip", action="store_true", help="no random left-right flips of the faces")
    group.add_argument("--holdout", type=cli.nonneg_int, default=100, help="faces held back from training for evaluate")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the held-out draw")
    return parser


def augment_policy(text: str) -> str:
    """``--augment``: operations of :mod:`hw_gan.augment`, checked while parsing."""
    try:
        parse_policy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def apply_recipe(args: argparse.Namespace, builtin: bool) -> dict:
    """Fill the options left unset from the recipe (``course`` under ``--course``) and the time
    budget (:data:`REAL_DATA_MINUTES`, or :data:`BUILTIN_MINUTES` on the built-in faces, when
    neither ``--epochs`` nor ``--time-limit`` is given); ``--precision auto`` on a CPU with
    native bfloat16 becomes ``bf16`` (:func:`core.device.bf16_where_native`). Returns the final values."""
    recipe = dict(RECIPES["course" if args.course else "default"])
    if args.epochs is None and args.time_limit is None:
        args.time_limit = BUILTIN_MINUTES if builtin else REAL_DATA_MINUTES
    chosen = cli.apply_recipe(args, recipe)
    args.precision = bf16_where_native(args.precision, args.device)   # bench/gan.py: 1.8x the steps/s
    return {**chosen, "time_limit": args.time_limit, "precision": args.precision}


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    source = find_source(args.data_dir)
    recipe = apply_recipe(args, source.builtin)
    echo("recipe: " + ", ".join(f"{k}={v}" for k, v in recipe.items()))
    train, held, source = load_data(args.data_dir, args.image_size, args.holdout, args.split_seed, args.batch_size)
    loader = DataLoader(InMemoryImages(train.images, flip=not args.no_flip), batch_size=args.batch_size,
                        shuffle=True, drop_last=True, num_workers=args.num_workers)

    torch.manual_seed(args.seed)
    generator = Generator(args.image_size, args.latent, args.width, args.upsample)
    discriminator = Discriminator(args.image_size, args.width, spectral=args.spectral_norm)
    echo(f"models: generator {count_parameters(generator):,} and discriminator "
         f"{count_parameters(discriminator):,} parameters at {args.image_size} px, width {args.width}")
    task = GANTask(generator, discriminator, lr=args.lr, betas=(args.beta1, 0.999), loss=args.loss,
                   label_smoothing=args.label_smoothing, instance_noise=args.instance_noise,
                   augment=parse_policy(args.augment), r1=args.r1, seed=args.seed)
    run = runs.RunDir.reserve(HOMEWORK, args)
    run.save_json(SPLIT_FILE, {"data": str(source.root) if source.root else "built-in",
                                 "holdout": held.names, "train": train.names})
    ema = EMA(args.ema) if args.ema else None
    callbacks = [run.start_callback(args), SampleGrids(run.plots)] + ([ema] if ema else [])
    trainer = cli.build_trainer(args, run_dir=run.path, callbacks=callbacks, reserve_seconds=FINISH_SECONDS)
    if trainer.device.type == "cpu":  # bench/gan.py: channels-last convolutions are faster on the CPU
        task.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    history = trainer.fit(task, loader, resume=args.resume)
    last = history[-1]
    metrics = {"epochs": len(history), "train_seconds": round(time.perf_counter() - start, 1),
               "steps": trainer.global_step, "generator_parameters": count_parameters(generator),
               "discriminator_parameters": count_parameters(discriminator),
               **{k.removeprefix("train_"): round(v, 4) for k, v in last.items() if k.startswith("train_")}}
    run.save_metrics(metrics)
    runs.save_model(run, homework=HOMEWORK, kind=KIND,
                    config={"image_size": args.image_size, "latent": args.latent, "width": args.width,
                            "upsample": args.upsample},
                    state_dict=reported_generator(task, ema).state_dict(), extras={"ema": args.ema or None})
    plot_history(run / "history.csv", run.plots / "history.png", title="DCGAN: losses and mean D scores")
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
