"""Score a trained run on a data set: reconstruction MSE (AE models, beside PCA's with as many
components) or the negative ELBO in nats per image (VAE models).

    python -m hw_autoencoder.evaluate --run runs/hw_autoencoder/<name> [--data-dir DIR]

On the data the run was trained on, only its held-out test images are scored (the split is
rebuilt from ``args.json``); on any other data set, every image. PCA is fitted on the run's
own training images. Writes ``metrics.json`` and a reconstruction figure into ``--run-dir``
(default ``<run>/eval-<data folder name>-<timestamp>``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from core import cli, runs
from core.console import echo
from core.device import pick_device
from core.plots import image_grid

from .data import ImageSet, add_download_arg, add_noise, fetch_digits, run_data
from .judge import classify, digit_judge
from .latent import decode, reconstruct, sample_codes
from .models import VAE, elbo_terms, load_model


def pca_mse(train: torch.Tensor, test: torch.Tensor, components: int, inputs: torch.Tensor | None = None) -> float:
    """Reconstruction MSE per pixel on ``test`` of scikit-learn's PCA with ``components``
    components fitted on ``train`` (images flattened, exact SVD): the linear baseline of an AE.
    Given ``inputs`` (e.g. noisy copies of ``test``), PCA reconstructs those and is scored
    against ``test``: the linear baseline of a denoising AE."""
    from sklearn.decomposition import PCA

    train_x, test_x = train.flatten(1).numpy(), test.flatten(1).numpy()
    in_x = test_x if inputs is None else inputs.flatten(1).numpy()
    pca = PCA(min(components, *train_x.shape), svd_solver="full").fit(train_x)
    return float(((pca.inverse_transform(pca.transform(in_x)) - test_x) ** 2).mean())


def wiener_mse(train: torch.Tensor, clean: torch.Tensor, noisy: torch.Tensor, noise: float) -> float:
    """MSE per pixel against ``clean`` of the best linear denoiser of ``noisy`` that the clean
    ``train`` images give: the linear MMSE (Wiener) estimate ``mean + S (S + f^2 I)^-1 (y - mean)``
    with ``S`` the training images' covariance and ``f^2`` the noise variance, computed in the
    principal axes of ``train`` (component ``i`` of variance ``l_i`` is shrunk by
    ``l_i / (l_i + f^2)``; directions the training images do not span are dropped)."""
    x = train.flatten(1).double()
    mean = x.mean(0)
    _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
    variance = singular ** 2 / max(len(x) - 1, 1)
    coords = (noisy.flatten(1).double() - mean) @ vh.T
    estimate = mean + (coords * (variance / (variance + noise ** 2))) @ vh
    return float(((estimate - clean.flatten(1).double()) ** 2).mean())


def score_autoencoder(model, test: ImageSet, train: ImageSet | None, noise: float = 0.0, seed: int = 0) -> dict:
    """``mse`` per pixel of the reconstructions of ``test`` (of its noisy copies, for a denoising
    model, against the clean images), the mean training image's (``mean_image_mse``) and,
    given the training images, PCA's with as many components fitted on them (``pca_mse``,
    ``mse_vs_pca``; for a denoising model PCA projects the noisy copies, a linear denoiser,
    and ``wiener_mse`` is the best linear denoiser's, :func:`wiener_mse`). An AE that fits its
    codes (``code_steps > 0``, :meth:`~hw_autoencoder.models.Autoencoder.fit_code`) is also
    scored on its encoder's codes alone (``encoder_mse``, ``encoder_mse_vs_pca``)."""
    images = test.images
    inputs = add_noise(images, noise, torch.Generator().manual_seed(seed)) if noise else images
    mse = float(((reconstruct(model, inputs) - images) ** 2).mean())
    metrics = {"images": len(test), "mse": mse}
    steps = getattr(model, "code_steps", 0)
    if steps:
        metrics["code_steps"] = steps
        metrics["encoder_mse"] = float(((reconstruct(model, inputs, steps=0) - images) ** 2).mean())
    if noise:
        metrics["noisy_mse"] = float(((inputs - images) ** 2).mean())
    if train is not None:
        metrics["mean_image_mse"] = float(((images - train.images.mean(0)) ** 2).mean())
        metrics["pca_mse"] = pca_mse(train.images, images, model.latent, inputs if noise else None)
        metrics["mse_vs_pca"] = mse / metrics["pca_mse"]
        if steps:
            metrics["encoder_mse_vs_pca"] = metrics["encoder_mse"] / metrics["pca_mse"]
        if noise:
            metrics["wiener_mse"] = wiener_mse(train.images, images, inputs, noise)
            metrics["mse_vs_wiener"] = mse / metrics["wiener_mse"]
    return metrics


@torch.no_grad()
def score_vae(model: VAE, test: ImageSet, seed: int = 0, batch_size: int = 500) -> dict:
    """The negative ELBO (``nelbo``) and its terms ``rec`` (-log p(x|z)) and ``kl``, in nats per
    image, each a one-sample estimate per image with a seeded noise draw."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sums = {"nelbo": 0.0, "rec": 0.0, "kl": 0.0}
    for start in range(0, len(test), batch_size):
        x = test.images[start:start + batch_size].to(device)
        y = test.labels[start:start + batch_size].to(device)
        terms = elbo_terms(model, x, y if model.conditional else None, generator)
        for key in sums:
            sums[key] += float(terms[key].sum())
    return {"images": len(test), **{key: value / len(test) for key, value in sums.items()}}


def cvae_samples(model: VAE, per_class: int = 10, seed: int = 0,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` samples of each class decoded from prior codes (eval mode, pixel means)."""
    labels = torch.arange(model.classes).repeat_interleave(per_class)
    codes = sample_codes(len(labels), model.latent, seed=seed, temperature=temperature)
    return decode(model, codes, labels), labels


def score_cvae_samples(model: VAE, train: ImageSet, test: ImageSet, per_class: int = 10, seed: int = 0,
                       draws: int = 10, judge_steps: int = 700) -> dict:
    """How often an independent judge (:mod:`hw_autoencoder.judge`, a small CNN trained on the
    real training digits only) reads the digit asked for in ``per_class`` CVAE samples of each
    digit, as the mean over ``draws`` seeded draws (``seed``, ``seed + 1``, ...; one draw of
    100 samples has a sampling error of 2-3 %): with codes from the prior N(0, I)
    (``sample_recognised``, its spread over the draws ``sample_recognised_sd`` and its worst
    digit ``sample_recognised_worst``) and from the prior's spread halved
    (``sample_recognised_t05``, ``--temperature 0.5``); and the judge's own accuracy on the
    real test digits (``classifier_real_accuracy``). ``judge_steps``: its training batches."""
    judge = digit_judge(train.images, train.labels, seed, judge_steps)
    metrics = {}
    for key, temperature in (("sample_recognised", 1.0), ("sample_recognised_t05", 0.5)):
        hits = []
        for draw in range(draws):
            samples, labels = cvae_samples(model, per_class, seed + draw, temperature)
            hits.append((classify(judge, samples) == labels).float().view(model.classes, per_class).mean(1))
        per_digit = torch.stack(hits)                                   # (draws, classes)
        metrics[key] = float(per_digit.mean())
        if temperature == 1.0:
            metrics[f"{key}_sd"] = float(per_digit.mean(1).std()) if draws > 1 else 0.0
            metrics[f"{key}_worst"] = float(per_digit.mean(0).min())
    real = classify(judge, test.images)
    return {**metrics, "sample_draws": draws * per_class * model.classes,
            "classifier_real_accuracy": float((real == test.labels).float().mean())}


def score(model, test: ImageSet, train: ImageSet | None, noise: float = 0.0, seed: int = 0,
          judge_steps: int = 700) -> dict:
    """The metrics of ``evaluate`` for any model of this homework: :func:`score_vae` (and, for
    the CVAE with training images, :func:`score_cvae_samples`; ``judge_steps``: its judge's
    training batches, fewer for a dry run) or :func:`score_autoencoder` (``noise``: the
    denoising AE's input noise, 0 for the others)."""
    if isinstance(model, VAE):
        metrics = score_vae(model, test, seed)
        if model.conditional and train is not None:
            metrics.update(score_cvae_samples(model, train, test, seed=seed, judge_steps=judge_steps))
        return metrics
    return score_autoencoder(model, test, train, noise, seed)


def reconstruction_figure(model, images: ImageSet, path, n: int = 8, noise: float = 0.0) -> Path:
    """Rows of originals (noisy inputs, for a denoising model) and their reconstructions."""
    x = images.images[:n]
    rows = [x]
    if noise:
        x = add_noise(x, noise, torch.Generator().manual_seed(0))
        rows.append(x.clamp(0, 1))
    rows.append(reconstruct(model, x, images.labels[:n]))
    titles = ["original"] * n + (["noisy"] * n if noise else []) + ["reconstruction"] * n
    return image_grid(torch.cat(rows), path, titles=titles, ncols=n)


def main(argv: list[str] | None = None) -> dict:
    parser = cli.make_parser("hw_autoencoder.evaluate", "Score a trained autoencoder run on a data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_autoencoder.train")
    parser.add_argument("--data-dir", default=None,
                        help="faces or MNIST root; default the run's data ($DLS_DATA/<name>, else built-in)")
    parser.add_argument("--device", type=cli.device_name, default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    parser.add_argument("--code-steps", type=cli.nonneg_int, default=None,
                        help="ae: steps that fit each code to its image (0: the encoder's code alone); "
                             "default the run's")
    add_download_arg(parser)
    cli.add_run_args(parser, default="<run>/eval-<data folder name, or builtin>-<timestamp>")
    args = cli.parse_args(parser, argv)
    loaded = load_model(args.run)
    name, dataset, noise = loaded.config["model"], loaded.extras["dataset"], loaded.extras["noise"]
    model = loaded.model.to(pick_device(args.device))
    if args.code_steps is not None:
        if name != "ae":
            parser.error(f"--code-steps: only an ae run fits its codes; {args.run} is a {name} run")
        model.code_steps = args.code_steps
    fetch_digits(args, parser, dataset)
    train, test, source, same = run_data(loaded.settings, dataset, loaded.config["shape"], args.data_dir)
    echo(f"model: {name} (latent {loaded.config['latent']}) from {args.run}; scoring "
         + (f"the {len(test)} held-out test images" if same else f"all {len(test)} images"))
    run = runs.RunDir.create("hw_autoencoder", args, parent=Path(args.run),
                            prefix=f"eval-{source.root.name if source.root else 'builtin'}-")
    metrics = score(model, test, train, noise, args.seed)
    run.save_metrics(metrics)
    reconstruction_figure(model, test, run.plots / "reconstructions.png", noise=noise)
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
