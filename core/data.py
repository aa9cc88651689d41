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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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
        from .device import echo

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
