"""Compare a trained GAN's faces with real ones: the course's leave-one-out 1-NN accuracy, a
t-SNE figure, two two-sample tests (a small CNN, and a logistic regression on HOG features),
the gradient-magnitude and Laplacian sharpness ratios, and the generated faces beside their
nearest training faces.

    python -m hw_gan.evaluate --run runs/hw_gan/<name>                     # the run's held-out faces
    python -m hw_gan.evaluate --run runs/hw_gan/<name> --data-dir DIR --n 600

With no ``--data-dir``, or the run's own data folder, the real images are the faces the run
held out (``split.json``): the model never saw them. Another folder is used whole. ``--n``
images of each kind are compared (default: every real one), all at ``--size`` px (64, the
course's; generated images of another size are resized). ``--baseline`` also scores samples of
a Gaussian fitted to the run's training faces in a 50-component PCA basis: blurry faces that
pixel-space 1-NN rates well and the other checks do not.

Writes ``metrics.json`` and ``plots/`` (t-SNE, generated and real grids, ``nearest_training.png``:
generated faces each followed by its three nearest training faces) into
``<run>/eval-<data>-<timestamp>/`` (or ``--run-dir``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from core import cli, runs
from core.console import echo
from core.errors import UserError

from .data import real_faces
from .images import save_grid
from .metrics import (copy_ratio, gradient_magnitude_ratio, hog_two_sample_test, loo_1nn_accuracy, nearest_neighbours,
                      pca_gaussian_samples, sharpness_ratio, two_sample_test)
from .models import generate, load_model


def build_parser():
    parser = cli.make_parser("hw_gan.evaluate", __doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by hw_gan.train")
    parser.add_argument("--data-dir", default=None, help="real faces; default: the run's held-out faces")
    parser.add_argument("--n", type=cli.int_at_least(2), default=None,
                        help="images of each kind (default: all real ones)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents and of the real subset")
    parser.add_argument("--folds", type=cli.int_at_least(2), default=5, help="folds of the two-sample test")
    parser.add_argument("--size", type=cli.int_at_least(16), default=64,
                        help="side at which the images are compared (generated ones are resized to it; at least "
                             "16, two of the HOG test's 8-pixel cells)")
    parser.add_argument("--baseline", action="store_true", help="also score a PCA-Gaussian's samples")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE figure")
    cli.add_run_args(parser, default="<run>/eval-<data folder name, or holdout>-<timestamp>")
    return parser


def score(real: torch.Tensor, fake: torch.Tensor, folds: int, seed: int, prefix: str = "",
          train: torch.Tensor | None = None) -> dict:
    """Every measure for one set of generated images (``copy_ratio`` only given ``train``)."""
    test = two_sample_test(real, fake, folds=folds, seed=seed)
    hog = hog_two_sample_test(real, fake, folds=folds, seed=seed)
    metrics = {"loo_1nn_accuracy": round(loo_1nn_accuracy(real, fake), 4),
               "two_sample_accuracy": round(test["accuracy"], 4), "two_sample_p_value": test["p_value"],
               "hog_two_sample_accuracy": round(hog["accuracy"], 4), "hog_two_sample_p_value": hog["p_value"],
               "gradient_ratio": round(gradient_magnitude_ratio(real, fake), 4),
               "sharpness_ratio": round(sharpness_ratio(real, fake), 4)}
    if train is not None:
        metrics["copy_ratio"] = round(copy_ratio(train, real, fake), 4)
    return {prefix + key: value for key, value in metrics.items()}


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` (N, 3, S, S) at ``size`` px: bilinear (antialiased when shrinking); as they are at S."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=images.shape[-1] > size).clamp(-1, 1)


def neighbours_figure(fake: torch.Tensor, train: torch.Tensor, path: Path, rows: int = 8, k: int = 3) -> Path:
    """A grid of ``rows`` generated faces, each followed by its ``k`` nearest training faces
    (pixel distance, nearest first)."""
    index, _ = nearest_neighbours(fake[:rows], train, k=k)
    tiles = [torch.cat([fake[i:i + 1], train[torch.as_tensor(index[i])]]) for i in range(min(rows, len(fake)))]
    return save_grid(torch.cat(tiles), path, ncols=k + 1)


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    run_path = Path(args.run)
    loaded = load_model(run_path)
    size = args.size
    real, train = real_faces(run_path, args.data_dir, size)
    n = args.n or len(real)
    if n > len(real):
        raise UserError(f"--n {n}: larger than the {len(real)} real images available")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))[:n]
    real_images = real.images[order]
    fake_images = resized(generate(loaded.model, n, args.seed), size)
    resize_note = "" if loaded.config["image_size"] == size else f" (generated at {loaded.config['image_size']} px)"
    echo(f"comparing {n} real and {n} generated images at {size} px{resize_note}")

    data_name = Path(args.data_dir).resolve().name if args.data_dir else "holdout"
    run = runs.RunDir.create("hw_gan", args, parent=run_path, prefix=f"eval-{data_name}-")  # a new folder each time
    train_images = train.images if train is not None else None
    metrics = {"n": n, "size": size, **score(real_images, fake_images, args.folds, args.seed, train=train_images)}
    if train_images is not None:
        neighbours_figure(fake_images, train_images, run.plots / "nearest_training.png")
    if args.baseline and train is not None:
        pca = pca_gaussian_samples(train_images, n, seed=args.seed)
        metrics.update(score(real_images, pca, args.folds, args.seed, prefix="pca_gaussian_", train=train_images))
        save_grid(pca[:64], run.plots / "pca_gaussian.png")
    elif args.baseline:
        echo("--baseline: skipped, the run's training faces are not the data evaluated on")
    run.save_metrics(metrics)
    save_grid(fake_images[:64], run.plots / "generated.png")
    save_grid(real_images[:64], run.plots / "real.png")
    if not args.no_tsne:
        from core.plots import embedding_scatter

        labels = ["real"] * n + ["generated"] * n
        embedding_scatter(torch.cat([real_images, fake_images]).flatten(1), labels, run.plots / "tsne.png",
                          title=f"t-SNE of pixels: LOO 1-NN accuracy {metrics['loo_1nn_accuracy']:.3f}")
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
