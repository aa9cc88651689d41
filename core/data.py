"""Where a homework's data lives, and reading image files with errors a user can act on.

A dataset root is resolved in this order (:func:`resolve_data_root`):

1. ``--data-dir PATH`` given on the command line: it must exist, or the run stops with an
   error naming the path;
2. ``$DLS_DATA/<name>`` when the environment variable is set and that folder exists;
3. the homework's built-in data (a bundled or procedurally generated set), which needs no
   network.

Exactly one line is printed saying which of these a run uses.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: per-channel mean and standard deviation of ImageNet's RGB images in [0, 1] (torchvision's
#: pretrained models expect inputs normalised with them)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(UserError):
    """Bad or missing input data. The message names the file or folder and the problem."""


@dataclass(frozen=True)
class DataSource:
    """The outcome of :func:`resolve_data_root`.

    Attributes:
        root: the folder to read, or ``None`` for the built-in data.
        origin: ``"--data-dir"``, ``"DLS_DATA"`` or ``"built-in"``.
        description: the one line printed about it.
    """

    root: Path | None
    origin: str
    description: str

    @property
    def builtin(self) -> bool:
        return self.root is None


def resolve_data_root(
    name: str,
    data_dir: str | os.PathLike | None = None,
    builtin: str = "built-in data",
    announce: bool = True,
) -> DataSource:
    """Find the root folder of dataset ``name`` (see the module docstring for the order).

    Args:
        name: the dataset's folder name under ``$DLS_DATA`` (``"ph2"``, ``"churn"``, ...).
        data_dir: the ``--data-dir`` value, if the user gave one.
        builtin: a short description of the fallback data, used in the printed line.
        announce: print the one line saying which data is used (on rank 0 only).

    Raises:
        DataError: ``data_dir`` was given but is not an existing folder.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.exists():
            raise DataError(f"--data-dir {root}: folder does not exist")
        if not root.is_dir():
            raise DataError(f"--data-dir {root}: is a file, expected a folder")
        source = DataSource(root.resolve(), "--data-dir", f"data: {name} from {root.resolve()} (--data-dir)")
    else:
        env = os.environ.get("DLS_DATA")
        candidate = Path(env).expanduser() / name if env else None
        if candidate is not None and candidate.is_dir():
            source = DataSource(candidate.resolve(), "DLS_DATA", f"data: {name} from {candidate.resolve()} ($DLS_DATA)")
        else:
            why = f" ($DLS_DATA has no '{name}' folder)" if env else " (no --data-dir, DLS_DATA unset)"
            source = DataSource(None, "built-in", f"data: {builtin}{why}")
    if announce:
        from .console import echo

        echo(source.description)
    return source


def require_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Return ``path`` as a ``Path`` if it is a directory, else raise :class:`DataError`."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: {what} not found")
    return path


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a ``Path`` if it is a file, else raise :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files in ``folder`` (by extension); an empty folder is an error."""
    folder = require_dir(folder, "image folder")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def image_folder_classes(root: str | os.PathLike) -> dict[str, list[Path]]:
    """Read a ``root/<class>/<image>`` tree into ``{class: [files]}``, sorted by class name.

    Raises:
        DataError: the root is missing, has no class folders, or a class folder has no images.
    """
    root = require_dir(root, "image-folder root")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class folders")
    out = {}
    for folder in classes:
        try:
            out[folder.name] = list_images(folder)
        except DataError:
            raise DataError(f"{folder}: class '{folder.name}' has no images") from None
    return out


def load_image(path: str | os.PathLike, mode: str | None = "RGB") -> Image.Image:
    """Open an image fully (not lazily) and convert it to ``mode``.

    Raises:
        DataError: the file is missing or is not a readable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode) if mode else img.copy()
    except Exception as exc:  # PIL raises several types for broken files
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None


def load_image_array(path: str | os.PathLike, mode: str | None = "RGB") -> np.ndarray:
    """:func:`load_image` as a ``uint8`` NumPy array (H, W[, C])."""
    return np.asarray(load_image(path, mode))


# -- labelled image folders (classification) ----------------------------------------------------
@dataclass
class LabelledImages:
    """Image files with integer labels into ``classes`` (sorted class names).

    ``labels`` is ``None`` for an unlabelled (test) set. ``skipped`` lists the files left out
    as unreadable, with the reason, so a command can print how many and which.
    """

    files: list[Path]
    labels: np.ndarray | None
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, index) -> "LabelledImages":
        index = np.asarray(index, dtype=np.int64)
        return LabelledImages([self.files[i] for i in index],
                              None if self.labels is None else self.labels[index], self.classes, [])

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes)) if self.labels is not None else []
        return {name: int(n) for name, n in zip(self.classes, counts)}


def image_folder_items(root: str | os.PathLike) -> LabelledImages:
    """``root/<class>/<image>`` as :class:`LabelledImages` (class names sorted, files sorted).

    Raises:
        DataError: no class folders, or a class folder without images (named).
    """
    by_class = image_folder_classes(root)
    classes = list(by_class)
    files = [f for name in classes for f in by_class[name]]
    labels = np.array([i for i, name in enumerate(classes) for _ in by_class[name]], dtype=np.int64)
    return LabelledImages(files, labels, classes)


def csv_label_items(csv_path: str | os.PathLike, image_dir: str | os.PathLike, id_column: str = "Id",
                    label_column: str = "Category",
                    locate: Callable[[Path, str, str], Path] | None = None) -> LabelledImages:
    """Images listed in a CSV of labels (``Id,Category``) as :class:`LabelledImages`.

    Each row's file is ``locate(image_dir, id, label)``; by default ``image_dir/<label>/<id>``
    when that exists, else ``image_dir/<id>``. Labels may be numbers or names; classes are
    their sorted distinct values (numerically when all are integers).

    Raises:
        DataError: the CSV is missing or lacks a column, or a listed file does not exist.
    """
    import pandas as pd

    csv_path = require_file(csv_path, "label CSV")
    image_dir = require_dir(image_dir, "image folder")
    try:
        table = pd.read_csv(csv_path, dtype=str)
    except Exception as exc:
        raise DataError(f"{csv_path}: cannot read CSV ({exc})") from None
    missing = [c for c in (id_column, label_column) if c not in table.columns]
    if missing:
        raise DataError(f"{csv_path}: missing column(s) {missing}; has {list(table.columns)}")
    if table.empty:
        raise DataError(f"{csv_path}: no rows")
    names = table[label_column].str.strip()
    values = sorted(names.unique(), key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    index = {name: i for i, name in enumerate(values)}
    locate = locate or _locate_in_class_folder
    files = []
    for image_id, label in zip(table[id_column].str.strip(), names):
        path = locate(image_dir, image_id, label)
        if not path.is_file():
            raise DataError(f"{csv_path}: row {image_id!r} (label {label!r}): image not found at {path}")
        files.append(path)
    return LabelledImages(files, names.map(index).to_numpy(np.int64), list(values))


def _locate_in_class_folder(image_dir: Path, image_id: str, label: str) -> Path:
    nested = image_dir / label / image_id
    return nested if nested.is_file() else image_dir / image_id


def stratified_split(labels: Sequence[int], val_fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/val split that keeps each class's share (scikit-learn's
    ``train_test_split(stratify=labels)``). A class with a single image goes to train.

    Raises:
        DataError: fewer images than needed for a non-empty split.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    counts = np.bincount(labels)
    single = np.flatnonzero(counts[labels] == 1)
    rest = np.flatnonzero(counts[labels] > 1)
    n_classes = len(np.unique(labels[rest]))
    n_val = max(int(round(val_fraction * len(rest))), n_classes)
    if len(rest) - n_val < n_classes:
        raise DataError(f"{len(labels)} images in {len(counts)} classes are too few for a stratified "
                        f"train/val split with val share {val_fraction}")
    train, val = train_test_split(rest, test_size=n_val, stratify=labels[rest], random_state=seed)
    return np.sort(np.concatenate([train, single])), np.sort(val)


def stratified_folds(labels: Sequence[int], folds: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, val)`` index pairs of a shuffled stratified K-fold split (scikit-learn's
    ``StratifiedKFold(folds, shuffle=True, random_state=seed)``): each image validates once."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [(train, val) for train, val in splitter.split(np.zeros(len(labels)), labels)]


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any PIL image as RGB: greyscale and palette images are expanded; transparency (RGBA, LA,
    a palette with a transparent colour) is composited onto ``background`` rather than dropped,
    so transparent pixels do not turn into whatever colour they happen to store."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if image.mode in ("I", "I;16", "F"):  # 16-bit or float greyscale: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        span = array.max() - array.min()
        array = (array - array.min()) / span * 255 if span > 0 else np.zeros_like(array)
        image = Image.fromarray(array.astype(np.uint8))
    return image.convert("RGB")


def read_rgb(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """An image file as a ``uint8`` RGB array (H, W, 3), resized to ``size x size`` if given.

    Raises:
        DataError: the file is missing or is not a readable image (named).
    """
    return rgb_array(load_image(path, mode=None), size)


def rgb_array(image: Image.Image, size: int | None = None) -> np.ndarray:
    """A PIL image as a ``uint8`` RGB array (:func:`to_rgb`), resized (bilinear) to
    ``size x size`` if given: the one way images are prepared for training and prediction."""
    image = to_rgb(image)
    if size is not None:
        image = image.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
    return np.asarray(image)


def decode_images(files: Sequence[Path], size: int | None = None, on_corrupt: str = "skip",
                  keep: bool = True, desc: str = "reading images") -> tuple[list[np.ndarray], list[int], list]:
    """Read every file once, so an unreadable image is found now and named, not deep inside a
    DataLoader worker.

    Args:
        files: image paths.
        size: resize each to ``size x size`` (bilinear) when given.
        on_corrupt: ``"skip"`` (leave the file out; it is returned in the third list) or ``"error"``.
        keep: return the decoded arrays (an in-memory cache); ``False`` only checks the files.
        desc: the progress bar's label.

    Returns:
        (arrays of the good files (empty when ``keep`` is False), indices of the good files,
        ``[(path, reason)]`` of the skipped ones).
    """
    if on_corrupt not in ("skip", "error"):
        raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    arrays, good, skipped = [], [], []
    bar_off = len(files) < 200 or not sys.stderr.isatty()
    for i, path in enumerate(tqdm(files, desc=desc, leave=False, disable=bar_off)):
        try:
            array = read_rgb(path, size)
        except DataError as exc:
            if on_corrupt == "error":
                raise DataError(f"{exc} (use --on-corrupt skip to leave such files out)") from None
            skipped.append((Path(path), str(exc).split(": ", 1)[-1]))
            continue
        good.append(i)
        if keep:
            arrays.append(array)
    return arrays, good, skipped


class InMemoryImages(Dataset):
    """Images held in one tensor (N, C, H, W): each item is the image, or ``(image, label)``
    when ``labels`` are given; with ``flip``, mirrored left-right with probability 0.5 (drawn
    from torch's global generator, so a resumed run draws the same flips)."""

    def __init__(self, images: torch.Tensor, labels=None, flip: bool = False):
        self.images, self.labels, self.flip = images, labels, flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        image = self.images[i]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image if self.labels is None else (image, self.labels[i])


class ImageClassificationDataset(Dataset):
    """``(image, label)`` pairs (or images alone when ``labels`` is None) for a DataLoader.

    Images come from ``cache`` (uint8 arrays from :func:`decode_images`) when given, else are
    read from ``files`` on each access. ``transform`` maps a uint8 (H, W, 3) array to the
    model's input tensor.
    """

    def __init__(self, files: Sequence[Path], labels: Sequence[int] | None, transform: Callable,
                 cache: Sequence[np.ndarray] | None = None, size: int | None = None):
        if cache is not None and len(cache) != len(files):
            raise ValueError(f"cache has {len(cache)} images for {len(files)} files")
        self.files, self.labels, self.transform = list(files), labels, transform
        self.cache, self.size = cache, size

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> np.ndarray:
        return self.cache[i] if self.cache is not None else read_rgb(self.files[i], self.size)

    def __getitem__(self, i: int):
        x = self.transform(self.image(i))
        return x if self.labels is None else (x, int(self.labels[i]))
