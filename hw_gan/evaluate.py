"""Compare a trained GAN's faces with real ones: the course's leave-one-out 1-NN accuracy, a
t-SNE figure, a classifier two-sample test and the gradient-magnitude ratio.

    python -m hw_gan.evaluate --run runs/hw_gan/<name>                     # the run's held-out faces
    python -m hw_gan.evaluate --run runs/hw_gan/<name> --data-dir DIR --n 600

With no ``--data-dir``, or the run's own data folder, the real images are the faces the run
held out (``split.json``): the model never saw them. Another folder is used whole. ``--n``
images of each kind are compared (default: every real one). ``--baseline`` also scores
samples of a Gaussian fitted to the run's training faces in a 50-component PCA basis: blurry
faces that pixel-space 1-NN rates well and the other two checks do not.

Writes ``metrics.json`` and ``plots/`` (t-SNE, generated and real grids) into
``<run>/eval-<data>-<timestamp>/`` (or ``--run-dir``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from core import cli, runs
from core.console import echo
from core.errors import UserError

from .data import real_faces
from .images import save_grid
from .metrics import gradient_magnitude_ratio, loo_1nn_accuracy, pca_gaussian_samples, two_sample_test
from .models import generate, load_model


def build_parser():
    parser = cli.make_parser("hw_gan.evaluate", __doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="run folder written by hw_gan.train")
    parser.add_argument("--data-dir", default=None, help="real faces; default: the run's held-out faces")
    parser.add_argument("--n", type=cli.int_at_least(2), default=None,
                        help="images of each kind (default: all real ones)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents and of the real subset")
    parser.add_argument("--folds", type=cli.int_at_least(2), default=5, help="folds of the two-sample test")
    parser.add_argument("--baseline", action="store_true", help="also score a PCA-Gaussian's samples")
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE figure")
    cli.add_run_args(parser, default="<run>/eval-<data folder name, or holdout>-<timestamp>")
    return parser


def score(real: torch.Tensor, fake: torch.Tensor, folds: int, seed: int, prefix: str = "") -> dict:
    """The three measures for one set of generated images."""
    test = two_sample_test(real, fake, folds=folds, seed=seed)
    return {f"{prefix}loo_1nn_accuracy": round(loo_1nn_accuracy(real, fake), 4),
            f"{prefix}two_sample_accuracy": round(test["accuracy"], 4),
            f"{prefix}two_sample_p_value": test["p_value"],
            f"{prefix}gradient_ratio": round(gradient_magnitude_ratio(real, fake), 4)}


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    run_path = Path(args.run)
    loaded = load_model(run_path)
    size = loaded.config["image_size"]
    real, train = real_faces(run_path, args.data_dir, size)
    n = args.n or len(real)
    if n > len(real):
        raise UserError(f"--n {n}: larger than the {len(real)} real images available")
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(args.seed))[:n]
    real_images = real.images[order]
    fake_images = generate(loaded.model, n, args.seed)
    echo(f"comparing {n} real and {n} generated images at {size} px")

    data_name = Path(args.data_dir).resolve().name if args.data_dir else "holdout"
    run = runs.RunDir.create("hw_gan", args, parent=run_path, prefix=f"eval-{data_name}-")  # a new folder each time
    metrics = {"n": n, **score(real_images, fake_images, args.folds, args.seed)}
    if args.baseline and train is not None:
        pca = pca_gaussian_samples(train.images, n, seed=args.seed)
        metrics.update(score(real_images, pca, args.folds, args.seed, prefix="pca_gaussian_"))
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
