"""Part 2's batch generator and the data sets: blobs, breast cancer, MNIST 0-vs-1.

MNIST is the test set in torchvision's raw layout, read by :mod:`core.mnist`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from core.mnist import load_mnist


def generate_batches(X: np.ndarray, y: np.ndarray, batch_size: int,
                     seed: int | None = 42) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(X[perm[i:i+b]], y[perm[i:i+b]])`` for consecutive slices of one permutation;
    the last incomplete batch is dropped and ``X``, ``y`` themselves are not shuffled.

    With the default ``seed=42`` the permutation is the one ``np.random.seed(42);
    np.random.permutation(len(X))`` gives (the course seeds inside the generator, so every
    epoch sees the same order; for 100 rows it moves every row, which the notebook's assert
    needs). It is drawn from a private ``RandomState``, leaving the global generator alone.
    ``seed=None`` draws from the global generator instead: a new order each call.
    """
    assert len(X) == len(y)
    perm = np.random.RandomState(seed).permutation(len(X)) if seed is not None else np.random.permutation(len(X))
    for start in range(0, len(X) - batch_size + 1, batch_size):
        rows = perm[start:start + batch_size]
        yield X[rows], y[rows]


def make_course_blobs() -> tuple[np.ndarray, np.ndarray]:
    """The course's two blobs: 1000 points around (-2, 0.5) and (3, -0.5), std 1, seed 42."""
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=1000, centers=[[-2, 0.5], [3, -0.5]], cluster_std=1, random_state=42)


def load_breast_cancer_data() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled breast-cancer table (569 x 30, 0 = malignant, 1 = benign)."""
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)


def load_mnist_01(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The 0 and 1 digits of the MNIST test set under ``root`` as (n, 784) float pixels, labels 0/1."""
    images, labels = load_mnist(root, "test")
    keep = labels <= 1
    return images[keep].reshape(int(keep.sum()), -1).astype(np.float64), labels[keep]
