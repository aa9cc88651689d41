"""Look inside a trained run: samples, reconstructions, the smile vector, a digit from the CVAE,
a t-SNE of the codes, the nearest training images of a query, noisy vs denoised images.

    python -m hw_autoencoder.explore --run RUN                  # samples and reconstructions
    python -m hw_autoencoder.explore --run RUN --smile          # faces along the smile vector
    python -m hw_autoencoder.explore --run RUN --digit 7        # ten 7s from a CVAE
    python -m hw_autoencoder.explore --run RUN --tsne           # 2-D t-SNE of held-out codes
    python -m hw_autoencoder.explore --run RUN --retrieve photo.jpg   # or --retrieve test:12
    python -m hw_autoencoder.explore --run RUN --denoise        # noisy vs denoised faces

Each request writes one figure into ``<run>/explore/`` (a new name if one exists already).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from core import cli
from core.data import DataError, load_image_array
from core.console import echo
from core.device import pick_device
from core.errors import UserError
from core.plots import embedding_scatter, image_grid

from .data import ImageSet, add_noise, crop_and_resize, run_data
from .latent import attribute_vector, decode, encode, nearest, reconstruct, sample_images
from .models import VAE, Autoencoder, load_model

SMILE_STEPS = (0.0, 0.5, 1.0, 1.5, 2.0)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_autoencoder.explore", "Figures from a trained hw_autoencoder run, written into <run>/explore/ (never overwritten).")
    parser.add_argument("--run", required=True, help="run folder written by hw_autoencoder.train")
    parser.add_argument("--data-dir", default=None, help="data to explore; default the run's")
    parser.add_argument("--smile", action="store_true", help="faces moved along the smile vector")
    parser.add_argument("--attribute", default="Smiling", help="--smile: the attribute column to use")
    parser.add_argument("--group", type=cli.positive_int, default=15, help="--smile: images in each group (most / least)")
    parser.add_argument("--digit", type=int, default=None, help="CVAE: ten samples of this digit")
    parser.add_argument("--tsne", action="store_true", help="2-D t-SNE of the held-out codes, coloured by class")
    parser.add_argument("--retrieve", default=None, metavar="IMAGE",
                        help="nearest training images of this photo (a file, or test:N for held-out image N)")
    parser.add_argument("--denoise", action="store_true", help="noisy vs denoised held-out faces")
    parser.add_argument("--noise", type=cli.nonneg_float, default=0.5, help="--denoise: noise factor (default 0.5)")
    parser.add_argument("--device", type=cli.device_name, default="auto", help="auto, cpu, cuda, mps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and the noise")
    parser.add_argument("--temperature", type=cli.positive_float, default=1.0,
                        help="scale of the sampled codes' spread (samples and --digit)")
    return parser


def fresh_path(folder: Path, name: str) -> Path:
    """``folder/name.png``, or ``name-2.png``, ... if taken: earlier figures are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    path, k = folder / f"{name}.png", 2
    while path.exists():
        path, k = folder / f"{name}-{k}.png", k + 1
    return path


def check_requests(args, name: str, dataset: str, model) -> None:
    """Refuse requests the run cannot answer, before any work (``name``: the run's model,
    ``dataset``: the data it was trained on)."""
    run = args.run
    if args.digit is not None:
        if not getattr(model, "conditional", False):
            raise UserError(f"--digit: needs a cvae run; {run} is a {name} run")
        if not 0 <= args.digit < model.classes:
            raise UserError(f"--digit {args.digit}: unknown digit, expected 0-{model.classes - 1}")
    if args.smile and dataset != "faces":
        raise UserError(f"--smile: needs a run trained on faces; {run} was trained on {dataset}")
    if args.denoise and not isinstance(model, Autoencoder):
        raise UserError(f"--denoise: needs an ae or denoise run; {run} is a {name} run")


def samples_figure(model, path: Path, seed: int, temperature: float = 1.0) -> Path:
    """The AE: codes from a Gaussian fitted to the training codes; the VAE: the prior N(0, I);
    the CVAE: one row per digit."""
    if getattr(model, "conditional", False):
        return image_grid(sample_images(model, 80, seed, temperature=temperature), path, ncols=10, cell_size=1.2,
                          title="CVAE samples, one column per digit")
    title = "samples from the prior N(0, I)" if isinstance(model, VAE) else \
        "decoded codes from a Gaussian fitted to the training codes"
    return image_grid(sample_images(model, 32, seed, temperature=temperature), path, ncols=8, cell_size=1.2,
                      title=title)


def smile_figure(model, train: ImageSet, test: ImageSet, attribute: str, group: int, path: Path) -> Path:
    """The ``group`` least-``attribute`` held-out faces, their codes plus 0, 0.5, ... times the
    attribute vector computed on the training faces (one column per strength). Work in code
    space (this vector, t-SNE, retrieval) uses the encoder's codes without the AE's
    :meth:`~hw_autoencoder.models.Autoencoder.fit_code` steps: they are fast, and the steps
    only polish each code for its own reconstruction."""
    if train.attrs is None or test.attrs is None:
        raise DataError(train.attrs_note or "the smile vector needs the attribute table (lfw_attributes.txt)")
    if attribute not in train.attrs.columns:
        raise DataError(f"--attribute {attribute!r}: not a column of the attribute table")
    vector, _, _ = attribute_vector(encode(model, train.images, steps=0), train.attrs[attribute].to_numpy(), group)
    least = np.argsort(test.attrs[attribute].to_numpy(), kind="stable")[:6]
    codes = encode(model, test.images[least])
    rows = [torch.cat([test.images[i:i + 1], decode(model, codes[j:j + 1] + torch.tensor(SMILE_STEPS)[:, None]
                                                     * vector)]) for j, i in enumerate(least)]
    titles = (["original"] + [f"+{s:g} vector" for s in SMILE_STEPS]) * len(least)
    return image_grid(torch.cat(rows), path, titles=titles, ncols=len(SMILE_STEPS) + 1, cell_size=1.4,
                      title=f"{attribute} vector: mean code of the {group} most minus the {group} least")


def digit_figure(model, digit: int, path: Path, seed: int, n: int = 10, temperature: float = 1.0) -> Path:
    images = sample_images(model, n, seed, digit, temperature)
    return image_grid(images, path, ncols=n, cell_size=1.2, title=f"CVAE: {n} samples of the digit {digit}")


def tsne_figure(model, test: ImageSet, path: Path, seed: int, limit: int = 2000) -> Path:
    test = test.subset(torch.arange(min(limit, len(test))))
    codes = encode(model, test.images, test.labels, steps=0)
    labels = np.array([test.classes[i] for i in test.labels.tolist()])
    return embedding_scatter(codes, labels, path, title=f"t-SNE of {len(test)} held-out codes", seed=seed)


def query_image(spec: str, test: ImageSet, shape: tuple[int, int, int]) -> tuple[torch.Tensor, str]:
    """The image of ``--retrieve``: ``test:N`` (held-out image N) or a file, cropped the
    course's way when it has LFW's 250x250 size, else resized to the model's input."""
    if spec.startswith("test:"):
        try:
            index = int(spec[5:])
            return test.images[index], test.names[index]
        except (ValueError, IndexError):
            raise UserError(f"--retrieve {spec}: expected test:N with N in 0-{len(test) - 1}") from None
    channels, size, _ = shape
    array = load_image_array(spec, "RGB" if channels == 3 else "L")
    crop = 80 if array.shape[:2] == (250, 250) else 0
    image = crop_and_resize(array.astype(np.float32) / 255.0, crop, size)
    tensor = torch.from_numpy(image)
    tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None]
    return tensor.float(), Path(spec).name


def retrieval_figure(model, train: ImageSet, query: torch.Tensor, name: str, path: Path, k: int = 11) -> Path:
    """The query and its ``k`` nearest training images in code space, with their distances."""
    distances, index = nearest(encode(model, train.images, steps=0), encode(model, query[None], steps=0), k)
    images = torch.cat([query[None], train.images[index[0]]])
    titles = [f"query {name}"[:28]] + [f"Dist={d:.3f}" for d in distances[0]]
    return image_grid(images, path, titles=titles, ncols=6, cell_size=1.6)


def denoise_figure(model, test: ImageSet, noise: float, path: Path, seed: int, n: int = 8) -> Path:
    clean = test.images[:n]
    noisy = add_noise(clean, noise, torch.Generator().manual_seed(seed))
    rows = torch.cat([clean, noisy.clamp(0, 1), reconstruct(model, noisy)])
    titles = ["clean"] * n + [f"noise {noise:g}"] * n + ["denoised"] * n
    return image_grid(rows, path, titles=titles, ncols=n, cell_size=1.4)


def main(argv: list[str] | None = None) -> list[Path]:
    args = cli.parse_args(build_parser(), argv)
    loaded = load_model(args.run)
    shape, dataset = tuple(loaded.config["shape"]), loaded.extras["dataset"]
    model = loaded.model.to(pick_device(args.device))
    check_requests(args, loaded.config["model"], dataset, model)
    train, test, _, _ = run_data(loaded.settings, dataset, shape, args.data_dir)
    if train is None:
        train = test
    folder = Path(args.run) / "explore"
    written = [samples_figure(model, fresh_path(folder, "samples"), args.seed, args.temperature),
               image_grid(torch.cat([test.images[:8], reconstruct(model, test.images[:8], test.labels[:8])]),
                          fresh_path(folder, "reconstructions"), ncols=8, cell_size=1.4)]
    if args.smile:
        written.append(smile_figure(model, train, test, args.attribute, args.group, fresh_path(folder, "smile")))
    if args.digit is not None:
        written.append(digit_figure(model, args.digit, fresh_path(folder, f"digit-{args.digit}"), args.seed,
                                    temperature=args.temperature))
    if args.tsne:
        written.append(tsne_figure(model, test, fresh_path(folder, "tsne"), args.seed))
    if args.retrieve:
        query, name = query_image(args.retrieve, test, shape)
        written.append(retrieval_figure(model, train, query, name, fresh_path(folder, "retrieval")))
    if args.denoise:
        written.append(denoise_figure(model, test, args.noise, fresh_path(folder, "denoise"), args.seed))
    for path in written:
        echo(f"wrote {path}")
    return written


if __name__ == "__main__":
    cli.run_command(main)
