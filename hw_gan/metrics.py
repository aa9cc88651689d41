"""How close generated images are to real ones: three measures and a baseline.

- :func:`loo_1nn_accuracy`: the course's leave-one-out 1-nearest-neighbour accuracy on
  pixels (Lopez-Paz & Oquab 2017; Xu et al. 2018, "An empirical study on evaluation metrics
  of GANs"). Ideal 0.5; 1.0 when the two sets are separable. Pixel distances reward blur:
  samples of a Gaussian fitted in a PCA basis of the faces score about 0.5.
- :func:`two_sample_test`: a classifier two-sample test (Lopez-Paz & Oquab 2017): a small
  CNN learns to tell real from generated, and its accuracy on images it was not trained on
  (k-fold) is the score. Ideal 0.5; blur, checkerboards and colour casts push it to 1.
- :func:`gradient_magnitude_ratio`: mean image-gradient magnitude, generated over real.
  Ideal 1.0; blurry samples are below (0.6 for a PCA-Gaussian's), noisy ones above.
- :func:`hog_two_sample_test`: the same two-sample test with another judge: a logistic
  regression on HOG features (Dalal & Triggs 2005: histograms of edge orientations in cells),
  k-fold. It sees the layout of edges, which blur and distorted faces both change. Ideal 0.5.
- :func:`sharpness_ratio`: mean absolute Laplacian (the 4-neighbour second difference) of
  the grey images, generated over real. Ideal 1.0; blur is below, noise above.
- :func:`nearest_neighbours`: each generated image's closest training images, and
  :func:`copy_ratio`, how close generated images are to the training set compared with
  real images the generator never saw (near 0: copies; about 1 or more: new images).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _flat(images) -> np.ndarray:
    array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return array.reshape(len(array), -1).astype(np.float64)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)) between the rows of ``a`` and of ``b``."""
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T


def loo_1nn_accuracy(real, fake) -> float:
    """Leave-one-out accuracy of a 1-NN classifier (Euclidean) on ``real`` (label 1) and
    ``fake`` (label 0): each image is classified by its nearest *other* image.

    The same number as the course's ``cross_val_score(KNeighborsClassifier(1), X, y,
    cv=LeaveOneOut())``, from one distance matrix instead of N fits.
    """
    x = np.concatenate([_flat(real), _flat(fake)])
    labels = np.r_[np.ones(len(real)), np.zeros(len(fake))]
    distances = _squared_distances(x, x)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(1)] == labels).mean())


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``sqrt(dx^2 + dy^2)`` (forward differences, each channel) of images
    (N, C, H, W): a ramp rising by ``s`` per pixel has magnitude ``s``."""
    images = images.detach().float()
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    return (dx ** 2 + dy ** 2).sqrt().flatten(1).mean(1)


def gradient_magnitude_ratio(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Mean gradient magnitude of ``fake`` over that of ``real`` (same value range). Ideal 1.0."""
    return float(gradient_magnitude(fake).mean() / gradient_magnitude(real).mean())


class SmallCNN(nn.Module):
    """The two-sample test's classifier: three stride-2 3x3 convolutions, global average
    pooling, one logit. Small on purpose: it must train in seconds on a few hundred images."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, 1), nn.Flatten(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _fit_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 32):
            batch = order[i:i + 32]
            loss = F.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def two_sample_test(real: torch.Tensor, fake: torch.Tensor, folds: int = 5, epochs: int = 30,
                    seed: int = 0) -> dict[str, float]:
    """Classifier two-sample test: ``accuracy`` of a :class:`SmallCNN` telling ``real`` from
    ``fake`` images (N, 3, H, W), each image predicted by the fold that did not train on it,
    and ``p_value``, the chance of at least that accuracy if the two sets were one
    distribution (binomial, one-sided). Ideal: accuracy 0.5."""
    from scipy.stats import binomtest

    x = torch.cat([real, fake]).detach().float().cpu()
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    fold_of = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) % folds
    correct = 0
    for k in range(folds):
        test = fold_of == k
        model = _fit_classifier(x[~test], y[~test], epochs, seed + k)
        with torch.no_grad():
            correct += int(((model(x[test]) > 0).float() == y[test]).sum())
    return {"accuracy": correct / len(x),
            "p_value": float(binomtest(correct, len(x), 0.5, alternative="greater").pvalue)}


def pca_gaussian_samples(images: torch.Tensor, n: int, components: int = 50, seed: int = 0) -> torch.Tensor:
    """A baseline generator: ``n`` draws of a Gaussian fitted to ``images`` in the basis of
    their first ``components`` principal components (the mean face plus a blurry mix of
    eigenfaces), clipped to the images' range."""
    x = _flat(images)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(components, len(s))
    std = s[:k] / np.sqrt(max(len(x) - 1, 1))
    z = np.random.default_rng(seed).standard_normal((n, k)) * std
    samples = torch.from_numpy(mean + z @ vt[:k]).float().reshape(n, *images.shape[1:])
    return samples.clamp(float(images.min()), float(images.max()))


def to_grey(images: torch.Tensor) -> np.ndarray:
    """Images (N, 3, H, W) in [-1, 1] as grey (N, H, W) in [0, 1] (ITU-R 601 luma weights)."""
    x = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(1).numpy().astype(np.float64)


def hog_features(images: torch.Tensor, cell: int = 8, block: int = 2) -> np.ndarray:
    """HOG features (9 orientations, ``cell`` x ``cell`` pixel cells, ``block`` x ``block``
    cell blocks, L2-Hys) of each grey image: (N, features)."""
    from skimage.feature import hog

    return np.stack([hog(img, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(block, block),
                         block_norm="L2-Hys", feature_vector=True) for img in to_grey(images)])


def hog_two_sample_test(real: torch.Tensor, fake: torch.Tensor, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Two-sample test with a logistic regression (standardised HOG features, L2, C = 1):
    ``accuracy`` on images of the fold it did not train on (stratified k-fold, shuffled with
    ``seed``) and ``p_value``, one-sided binomial against 0.5. Ideal: accuracy 0.5."""
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([hog_features(real), hog_features(fake)])
    y = np.r_[np.ones(len(real)), np.zeros(len(fake))]
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    predicted = cross_val_predict(model, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    correct = int((predicted == y).sum())
    return {"accuracy": correct / len(y),
            "p_value": float(binomtest(correct, len(y), 0.5, alternative="greater").pvalue)}


def laplacian_sharpness(images: torch.Tensor) -> np.ndarray:
    """Per-image mean ``|4 x - (up + down + left + right)|`` over the inner pixels of the grey
    images (in [0, 1]): a flat image has 0, a checkerboard of 0 and 1 has 4."""
    g = to_grey(images)
    lap = 4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:]
    return np.abs(lap).reshape(len(g), -1).mean(1)


def sharpness_ratio(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Mean :func:`laplacian_sharpness` of ``fake`` over that of ``real``. Ideal 1.0."""
    return float(laplacian_sharpness(fake).mean() / laplacian_sharpness(real).mean())


def nearest_neighbours(queries: torch.Tensor, pool: torch.Tensor, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """For each query image, the indices (N, k) of its ``k`` nearest images of ``pool`` and
    their Euclidean pixel distances (N, k), nearest first."""
    distances = _squared_distances(_flat(queries), _flat(pool))
    order = np.argsort(distances, axis=1)[:, :k]
    return order, np.sqrt(np.maximum(np.take_along_axis(distances, order, axis=1), 0.0))


def copy_ratio(train: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Median distance from a generated image to its nearest training image, over the same
    median for real images that are not in ``train``: near 0 when the generator copies its
    training images, about 1 when its images are as new as unseen real ones."""
    return float(np.median(nearest_neighbours(fake, train)[1]) / np.median(nearest_neighbours(real, train)[1]))
