"""MNIST in torchvision's raw layout, read with a small IDX reader; :func:`download_mnist` fetches
the files with torchvision's downloader where the network allows.

``<root>/MNIST/raw/`` holds ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``
(the 10,000 test digits) and, for the full set, the ``train-*`` pair (60,000 digits); files
that torchvision has downloaded and unpacked are read the same way.

IDX (LeCun's MNIST format): a big-endian header of a magic number ``0x00000800 | ndim``
(the third byte 0x08 says unsigned bytes) and ``ndim`` 32-bit sizes, then the values. The
magic number and the shape are checked against what each slot expects, so a labels file
given where the images belong is an error that names the file.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .data import DataError, require_file

RAW_DIR = "MNIST/raw"
#: split -> (images file, labels file), without the optional ``.gz``
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SHAPE = (None, 28, 28)
LABEL_SHAPE = (None,)


def read_idx(path: str | os.PathLike, shape: tuple[int | None, ...] | None = None,
             what: str = "MNIST IDX file") -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of its shape.

    Args:
        path: the file (``.gz`` files are decompressed).
        shape: the expected shape, ``None`` for any size along an axis (``(None, 28, 28)``
            for images, ``(None,)`` for labels); ``None`` accepts any shape.
        what: how the file is named in the "not found" error.

    Raises:
        DataError: missing file, not gzip, bad magic number, a shape other than ``shape``, or
            fewer values than the header says.
    """
    path = require_file(path, what)
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
    if len(raw) < header:
        raise DataError(f"{path}: IDX header cut short ({len(raw)} bytes for {ndim} dimensions)")
    found = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if shape is not None and (len(found) != len(shape) or any(s is not None and s != f for s, f in zip(shape, found))):
        expected = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise DataError(f"{path}: IDX array of shape {found}, expected {expected}")
    expected_values = int(np.prod(found))
    if len(raw) - header != expected_values:
        raise DataError(f"{path}: header says shape {found} ({expected_values} values), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(found)


def mnist_file(root: str | os.PathLike, name: str) -> Path:
    """``<root>/MNIST/raw/<name>``: the unpacked file if present, else ``<name>.gz`` (which
    need not exist: :func:`read_idx` then names it as missing)."""
    raw = Path(root) / RAW_DIR
    return raw / name if (raw / name).is_file() else raw / f"{name}.gz"


def has_split(root: str | os.PathLike, split: str) -> bool:
    """True if the images file of ``split`` (``"train"`` or ``"test"``) is under ``root``."""
    return mnist_file(root, SPLIT_FILES[split][0]).is_file()


def load_mnist(root: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """One MNIST split under ``root`` as ``uint8`` images (n, 28, 28) and ``int64`` labels (n,).

    Raises:
        DataError: a missing or malformed file (named), labels outside 0-9, or as many
            labels as images not found.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    images_name, labels_name = SPLIT_FILES[split]
    images = read_idx(mnist_file(root, images_name), IMAGE_SHAPE)
    labels_path = mnist_file(root, labels_name)
    labels = read_idx(labels_path, LABEL_SHAPE)
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    if len(labels) and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} found, MNIST labels are 0-9")
    return images, labels.astype(np.int64)


def download_mnist(root: str | os.PathLike) -> Path:
    """Fetch the full MNIST (the four files of :data:`SPLIT_FILES`) into ``<root>/MNIST/raw``
    with ``torchvision.datasets.MNIST(root, train=False, download=True)``, which skips files already there
    and checks each download's MD5; :func:`load_mnist` then reads them. Returns ``root``.

    Raises:
        DataError: the download failed (no network, say), in one sentence naming the files
            and where to put them.
    """
    root = Path(root).expanduser()
    try:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=False, download=True)     # fetches all four files, then reads the test split
    except Exception as exc:  # URLError, RuntimeError, OSError: all mean "not downloaded"
        names = ", ".join(f"{name}.gz" for pair in SPLIT_FILES.values() for name in pair)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot download MNIST into {root / RAW_DIR} ({reason}): copy {names} from "
                        f"https://ossci-datasets.s3.amazonaws.com/mnist/ into that folder and run without "
                        f"--download") from None
    return root
