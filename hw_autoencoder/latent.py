"""Work in code space: encode and decode a set, sample codes like the training codes (or
from the prior), the smile vector, nearest-neighbour retrieval. A trained run's model comes
from :func:`hw_autoencoder.load_model`."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.data import DataError

from .models import VAE, Autoencoder


@torch.no_grad()
def encode(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
           batch_size: int = 256, steps: int | None = None) -> torch.Tensor:
    """Codes of ``images`` in eval mode: the AE's code, the VAE's ``mu`` (N, latent). For the
    AE, ``steps`` of :meth:`~hw_autoencoder.models.Autoencoder.fit_code` (default: the
    model's ``code_steps``; 0: the encoder's code alone, for fast work in code space)."""
    model.eval()
    device = next(model.parameters()).device
    codes = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        if isinstance(model, VAE):
            y = labels[start:start + batch_size].to(device) if model.conditional else None
            code = model.encode(x, y)[0] if model.conditional else model.encode(x)[0]
        else:
            code = model.encode(x, steps)
        codes.append(code.float().cpu())
    return torch.cat(codes)


@torch.no_grad()
def decode(model: nn.Module, codes: torch.Tensor, labels: torch.Tensor | None = None,
           batch_size: int = 256) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] decoded from ``codes`` (and classes, for the CVAE)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(codes), batch_size):
        z = codes[start:start + batch_size].to(device)
        if getattr(model, "conditional", False):
            out.append(model.decode(z, labels[start:start + batch_size].to(device)).float().cpu())
        else:
            out.append(model.decode(z).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def reconstruct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None,
                steps: int | None = None) -> torch.Tensor:
    """Eval-mode reconstructions (the VAE decodes ``mu``; ``steps``: see :func:`encode`)."""
    return decode(model, encode(model, images, labels, steps=steps), labels)


def fit_code_gaussian(model: Autoencoder, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of each code dimension over ``images``, kept in the model
    (``code_mean``, ``code_std``, saved with its weights): the course's hint for sampling an
    AE, ``z = mean + std * N(0, I)``, so that samples look like the codes of real images
    (the encoder's codes, without :meth:`~hw_autoencoder.models.Autoencoder.fit_code`: fast,
    and about as spread)."""
    codes = encode(model, images, steps=0)
    model.code_mean.copy_(codes.mean(0))
    model.code_std.copy_(codes.std(0) if len(codes) > 1 else torch.ones_like(codes[0]))
    return model.code_mean, model.code_std


def sample_codes(n: int, latent: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 seed: int = 0, temperature: float = 1.0) -> torch.Tensor:
    """``n`` codes from N(mean, diag(std^2)) (N(0, I), the VAE's prior, by default); a
    ``temperature`` below 1 scales the spread, trading variety for typical samples."""
    z = temperature * torch.randn(n, latent, generator=torch.Generator().manual_seed(seed))
    if std is not None:
        z = z * std
    if mean is not None:
        z = z + mean
    return z


def sample_images(model: nn.Module, n: int, seed: int = 0, digit: int | None = None,
                  temperature: float = 1.0) -> torch.Tensor:
    """``n`` decoded samples (N, C, H, W) in [0, 1]: the VAE's codes from its prior N(0, I), the
    AE's from the Gaussian of its training codes (spread scaled by ``temperature``); the CVAE
    cycles through the digits unless ``digit`` picks one."""
    if getattr(model, "conditional", False):
        labels = torch.full((n,), digit) if digit is not None else torch.arange(n) % model.classes
        return decode(model, sample_codes(n, model.latent, seed=seed, temperature=temperature), labels)
    if isinstance(model, VAE):
        return decode(model, sample_codes(n, model.latent, seed=seed, temperature=temperature))
    return decode(model, sample_codes(n, model.latent, model.code_mean.cpu(), model.code_std.cpu(), seed,
                                      temperature))


def attribute_groups(scores, n: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``n`` highest and the ``n`` lowest ``scores`` (e.g. the ``Smiling``
    column): the course's "about 15 smiling and 15 non-smiling people"."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2 * n:
        raise DataError(f"the attribute vector needs at least {2 * n} images with scores, got {len(scores)}")
    order = np.argsort(-scores, kind="stable")
    return order[:n].copy(), order[::-1][:n].copy()


def attribute_vector(codes: torch.Tensor, scores, n: int = 15) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The course's smile vector ``mean(z_smile) - mean(z_sad)`` over the ``n`` most and least
    smiling images (any attribute works the same); returns it and the two groups' indices."""
    top, bottom = attribute_groups(scores, n)
    return codes[top].mean(0) - codes[bottom].mean(0), top, bottom


def nearest(index_codes, query_codes, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (each (queries, k)) of the ``k`` nearest index codes to each query
    in Euclidean latent distance (scikit-learn ``NearestNeighbors``; the course's
    ``LSHForest`` was removed from scikit-learn in 0.21)."""
    from sklearn.neighbors import NearestNeighbors

    index_codes = np.asarray(index_codes, dtype=np.float64)
    search = NearestNeighbors(n_neighbors=min(k, len(index_codes))).fit(index_codes)
    return search.kneighbors(np.asarray(query_codes, dtype=np.float64).reshape(-1, index_codes.shape[1]))

