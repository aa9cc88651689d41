"""Part 2's batch generator and the data sets: blobs, breast cancer, MNIST 0-vs-1.

MNIST is read from the torchvision raw layout (``MNIST/raw/t10k-images-idx3-ubyte.gz`` and
``t10k-labels-idx1-ubyte.gz``) with a small IDX reader, so no torchvision download logic runs.
IDX (LeCun's MNIST format): a big-endian header of a magic number ``0x00000800 | dtype << 8 |
ndim`` (0x08 = uint8) and ``ndim`` 32-bit sizes, then the values.
"""
from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.data import DataError, require_file

MNIST_IMAGES = "MNIST/raw/t10k-images-idx3-ubyte.gz"
MNIST_LABELS = "MNIST/raw/t10k-labels-idx1-ubyte.gz"


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


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of its shape.

    Raises:
        DataError: missing file, not gzip, bad magic number, or fewer values than the header says.
    """
    path = require_file(path, "MNIST IDX file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'missing'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(f"{path}: header says shape {shape} ({expected} values), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist_01(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The 0 and 1 digits of the MNIST test set under ``root`` as (n, 784) float pixels, labels 0/1."""
    root = Path(root)
    images = read_idx(root / MNIST_IMAGES)
    labels = read_idx(root / MNIST_LABELS)
    if len(images) != len(labels):
        raise DataError(f"{root / MNIST_LABELS}: {len(labels)} labels for {len(images)} images")
    keep = labels <= 1
    return images[keep].reshape(int(keep.sum()), -1).astype(np.float64), labels[keep].astype(np.int64)
