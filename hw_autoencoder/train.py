"""Train an autoencoder on LFW faces, or a (conditional) VAE on MNIST digits.

    python -m hw_autoencoder.train --model ae          # faces: AE, scored against PCA
    python -m hw_autoencoder.train --model vae         # digits: VAE, negative ELBO in nats
    python -m hw_autoencoder.train --model cvae        # digits: conditional VAE
    python -m hw_autoencoder.train --model denoise     # faces: denoising AE (noise 0.5)

``ae`` and ``denoise`` default to the faces (``$DLS_DATA/faces``), ``vae`` and ``cvae`` to the
digits (``$DLS_DATA/mnist``); ``--dataset`` picks the other. The images are split once
(``--split-seed``): 20 % held out for the final figures, 10 % of the rest to watch training.
Epochs, batch size, learning rate and code size default to the recipe of the model (printed);
``--time-limit MINUTES`` fits the epochs to a budget instead.
The run folder gets history.csv, best.pt/last.pt, model.pt (the final weights, for evaluate,
explore and sample), metrics.json (the held-out figures) and plots.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from core import cli, runs
from core.console import echo
from core.loggers import log_run_images
from core.inference import count_parameters
from core.plots import image_grid, plot_history

from .data import ImageSet, Images, add_download_arg, fetch_digits, load_dataset, split_indices
from .evaluate import reconstruction_figure, score
from .latent import fit_code_gaussian, sample_images
from .models import HOMEWORK, KIND, MODEL_NAMES, Autoencoder, build_model
from .task import AutoencoderTask, VAETask

DATASET_OF = {"ae": "faces", "denoise": "faces", "vae": "digits", "cvae": "digits"}
JITTER = {"none": None, "shift": dict(shift=3.0, scale=0.05),
          "full": dict(shift=3.0, scale=0.05, rotate=5.0, brightness=0.1)}  # jitter_faces' arguments
RECIPES = {
    "ae": dict(epochs=55, batch_size=32, lr=1e-3, latent=64, refine=32, jitter="shift", code_steps=30),
    "denoise": dict(epochs=20, batch_size=32, lr=1e-3, latent=256, refine=32, jitter="shift", code_steps=0),
    "vae": dict(epochs=20, batch_size=64, lr=1e-3, latent=20, shift=0, blocks=1),
    "cvae": dict(epochs=10, batch_size=64, lr=1e-3, latent=3, shift=0, blocks=0),
}


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_recipe_parser("hw_autoencoder.train", __doc__.split("\n")[0], RECIPES,
                                    "faces (ae, denoise) or $DLS_DATA/mnist (vae, cvae)")
    group = parser.add_argument_group("autoencoder")
    group.add_argument("--model", choices=MODEL_NAMES, default="ae", help="ae, vae, cvae or denoise")
    group.add_argument("--dataset", choices=("faces", "digits"), default=None,
                       help="faces for ae/denoise, digits for vae/cvae")
    group.add_argument("--latent", type=cli.positive_int, default=None, help="code size; None: the recipe's (64 AE, 256 denoising AE, 20 VAE, 3 CVAE)")
    group.add_argument("--width", type=cli.positive_int, default=32, help="channels of the first convolution")
    group.add_argument("--noise", type=cli.nonneg_float, default=0.5, help="denoise: the noise factor of X + f * N(0, 1)")
    group.add_argument("--warmup", type=cli.probability, default=0.0,
                       help="vae/cvae: share of the run over which the KL weight rises from 0 to 1")
    group.add_argument("--shift", type=cli.nonneg_int, default=None,
                       help="vae/cvae: move each training digit by up to this many pixels; None: the recipe's")
    group.add_argument("--blocks", type=cli.nonneg_int, default=None,
                       help="vae/cvae: residual blocks per resolution in the decoder; None: the recipe's")
    group.add_argument("--no-pca", action="store_true",
                       help="ae/denoise: a plain convolutional AE, without the linear part fixed to PCA's")
    group.add_argument("--refine", type=cli.nonneg_int, default=None,
                       help="ae/denoise: channels of the full-resolution refiner after the decoder (0: none); "
                            "None: the recipe's")
    group.add_argument("--code-steps", type=cli.nonneg_int, default=None,
                       help="ae: steps that fit each code to its image after training, the decoder fixed "
                            "(Autoencoder.fit_code; 0: the encoder's code alone); None: the recipe's")
    group.add_argument("--no-flip", action="store_true", help="faces: no random horizontal flips in training")
    group.add_argument("--jitter", choices=tuple(JITTER), default=None,
                       help="ae/denoise: training faces moved and scaled a little (shift: up to 3 px, 5 %%), "
                            "also turned and brightened (full: up to 5 degrees, 10 %%), or not (none); "
                            "None: the recipe's")
    group.add_argument("--n-images", type=cli.int_at_least(10), default=600, help="number of generated faces when no faces are found")
    group.add_argument("--split-seed", type=int, default=0, help="seed of the train/val/test split")
    add_download_arg(group)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, in argparse's one-line style, and fill the
    options left at None from the model's recipe."""
    args.dataset = args.dataset or DATASET_OF[args.model]
    if args.model == "cvae" and args.dataset != "digits":
        parser.error("--model cvae: needs the digits' classes (--dataset digits)")
    if args.code_steps and args.model != "ae":
        parser.error(f"--code-steps: only the ae fits its codes (a {args.model} would fit "
                     + ("the noise of its input)" if args.model == "denoise" else "a code the ELBO does not use)"))
    if args.model in ("vae", "cvae"):
        args.refine, args.code_steps = 0, 0
    else:
        args.shift, args.blocks = args.shift or 0, args.blocks or 0
    cli.apply_recipe(args, RECIPES[args.model])


def make_task(args, model):
    if args.model in ("vae", "cvae"):
        return VAETask(model, lr=args.lr, warmup=args.warmup, shift=args.shift)
    return AutoencoderTask(model, lr=args.lr, noise=args.noise if args.model == "denoise" else 0.0,
                           jitter=JITTER[args.jitter or "none"])


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    check_args(parser, args)
    fetch_digits(args, parser, args.dataset)
    data, source = load_dataset(args.dataset, args.data_dir, args.n_images)
    echo(f"dataset: {data.description}")
    if data.attrs is None and data.attrs_note:
        echo(f"note: {data.attrs_note}")
    train_ix, val_ix, test_ix = split_indices(len(data), args.split_seed)
    train, val, test = data.subset(train_ix), data.subset(val_ix), data.subset(test_ix)
    echo(f"split: {len(train)} train / {len(val)} val / {len(test)} held-out test (split seed {args.split_seed})")
    echo("recipe: " + "  ".join(f"{k}={getattr(args, k)}" for k in RECIPES[args.model]) + f"  model={args.model}"
         + (f"  time_limit={args.time_limit:g} min (the epochs that fit)" if args.time_limit else ""))
    flip = args.dataset == "faces" and not args.no_flip
    train_loader = DataLoader(Images(train, flip=flip),
                              batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
                              drop_last=len(train) > args.batch_size)
    val_loader = DataLoader(Images(val), batch_size=256, num_workers=args.num_workers)

    torch.manual_seed(args.seed)
    linear = args.model in ("ae", "denoise") and not args.no_pca
    model = build_model(args.model, data.shape, args.latent, args.width, linear, args.refine if linear else 0,
                        args.blocks, args.code_steps)
    if linear:
        model.init_pca(train.images, args.noise if args.model == "denoise" else 0.0, mirror=flip)
    echo(f"model: {type(model).__name__}, code size {args.latent}, {count_parameters(model):,} parameters")
    task = make_task(args, model)
    args.data_root = str(source.root) if source.root else None
    run = runs.RunDir.reserve("hw_autoencoder", args)
    trainer = cli.build_trainer(args, run_dir=run.path, monitor="val_loss", mode="min",
                                callbacks=[run.start_callback(args)])
    start = time.perf_counter()
    history = trainer.fit(task, train_loader, val_loader, resume=args.resume)
    model = task.model.cpu().eval()
    if isinstance(model, Autoencoder):
        fit_code_gaussian(model, train.images)
    noise = args.noise if args.model == "denoise" else 0.0
    config = {"model": args.model, "shape": list(data.shape), "latent": args.latent, "width": args.width,
              "linear": linear, "refine": args.refine if linear else 0, "blocks": args.blocks,
              "code_steps": args.code_steps, "code_lr": model.code_lr if isinstance(model, Autoencoder) else 0.0}
    runs.save_model(run, homework=HOMEWORK, kind=KIND, config=config, state_dict=model.state_dict(),
                    extras={"dataset": args.dataset, "noise": noise})

    metrics = {"epochs": len(history), "train_seconds": round(time.perf_counter() - start, 1),
               "parameters": count_parameters(model)}
    judge_steps = 20 if args.dry_run else 700        # a dry run checks the pipeline, not the figures
    metrics.update({f"test_{k}": v for k, v in score(model, test, train, noise, args.seed, judge_steps).items()})
    run.save_metrics(metrics)
    write_plots(run, model, args.model, test, noise)
    log_run_images(args, run.path, {"reconstructions": run.plots / "reconstructions.png",
                                    "samples": run.plots / "samples.png"}, step=trainer.epoch)
    run.summary(metrics)
    return metrics


def write_plots(run: runs.RunDir, model, name: str, test: ImageSet, noise: float = 0.0) -> None:
    """Curves, held-out reconstructions (of noisy inputs, with ``noise``) and samples (the AE's
    from a Gaussian fitted to its training codes, the VAE's from the prior N(0, I), the CVAE's
    one row per digit)."""
    plot_history(run / "history.csv", run.plots / "history.png", title=name)
    reconstruction_figure(model, test, run.plots / "reconstructions.png", noise=noise)
    n = 80 if getattr(model, "conditional", False) else 32
    image_grid(sample_images(model, n), run.plots / "samples.png", ncols=10 if n == 80 else 8, cell_size=1.2)


if __name__ == "__main__":
    cli.run_command(main)
