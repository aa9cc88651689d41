"""The homework's two data sets: LFW faces with their attribute scores, and MNIST digits.

Faces are loaded the course's way (``fetch_dataset`` of the template): every photo of
``lfw/<Name>/<Name>_NNNN.jpg`` is cropped by 80 pixels on each side (250x250 -> 90x90),
resized to 64x64 (``skimage.transform.resize``, floats in [0, 1]) and merged with its row of
``lfw_attributes.txt`` (PubFig's table: a comment line, a header ``#, person, imagenum,
<attributes>``, one tab-separated row per photo) on person and image number. Every photo
must have its row; the table is optional (without it the smile vector cannot be computed,
everything else runs).

Digits are MNIST in torchvision's raw layout (:mod:`core.mnist`), pixels scaled to [0, 1].

With no data on disk, the built-in sets are generated faces (with ``Smiling`` and
``Eyeglasses`` scores) and scikit-learn's 8x8 digits drawn at MNIST's size.

Every command reads its data here: :func:`load_dataset` (the faces or the digits, from
``--data-dir``, ``$DLS_DATA`` or built-in), :func:`run_data` (the images of a trained run, its
split rebuilt from its settings), :func:`fetch_digits` (``--download``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.console import echo
from core.data import DataError, DataSource, InMemoryImages, list_images, load_image_array, require_dir, resolve_data_root
from core.mnist import RAW_DIR, download_mnist, has_split, load_mnist

ATTRIBUTES_FILE = "lfw_attributes.txt"
PHOTO_FOLDERS = ("lfw", "lfw-deepfunneled")
CROP = 80
FACE_SIZE = 64
_PHOTO_NAME = re.compile(r"^(?P<person>.+)_(?P<num>\d+)$")
DOWNLOAD_DIR = "data/mnist"


@dataclass
class ImageSet:
    """Images (N, C, H, W) in [0, 1] with a class per image (digit, or person for faces).

    Attributes:
        images: float tensor (N, C, H, W).
        labels: long tensor (N,): the digit, or the index of the person in ``classes``.
        classes: the name of each label value.
        names: a name per image (the photo's file name, or ``digit-<i>``).
        attrs: the attribute scores, one row per image (faces with a table only).
        description: one line saying what the data is.
        attrs_note: why ``attrs`` is missing, when it is.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    names: list[str]
    description: str
    attrs: pd.DataFrame | None = None
    attrs_note: str = ""
    kind: str = field(default="faces")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, index) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        attrs = self.attrs.iloc[index.numpy()].reset_index(drop=True) if self.attrs is not None else None
        return ImageSet(self.images[index], self.labels[index], self.classes, [self.names[i] for i in index.tolist()],
                        self.description, attrs, self.attrs_note, self.kind)


def split_indices(n: int, seed: int = 0, val: float = 0.1, test: float = 0.2) -> tuple[np.ndarray, ...]:
    """Train / val / test indices of one seeded permutation: ``test`` of the images are held
    out for the final figures, ``val`` of the rest watch training."""
    perm = np.random.RandomState(seed).permutation(n)
    n_test = max(1, round(n * test))
    n_val = max(1, round((n - n_test) * val))
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


# -- faces ---------------------------------------------------------------------------------------
def parse_photo_name(path: str | os.PathLike) -> tuple[str, int]:
    """``George_W_Bush_0012.jpg`` -> ``("George W Bush", 12)``, the attribute table's keys."""
    match = _PHOTO_NAME.match(Path(path).stem)
    if match is None:
        raise DataError(f"{path}: expected a photo named <Name>_<number>.jpg")
    return match["person"].replace("_", " "), int(match["num"])


def read_attributes(path: str | os.PathLike) -> pd.DataFrame:
    """PubFig's ``lfw_attributes.txt`` as a table with ``person``, ``imagenum`` and one float
    column per attribute. Its header line starts with ``#``, one field more than the rows,
    so the course shifts the column names by one; here the ``#`` is dropped instead."""
    path = Path(path)
    with open(path, encoding="utf-8") as stream:
        stream.readline()  # the comment line
        header = stream.readline().rstrip("\n").split("\t")
        if header and header[0].strip() == "#":
            header = header[1:]
        if header[:2] != ["person", "imagenum"]:
            raise DataError(f"{path}: expected a header '#, person, imagenum, <attributes>' on line 2, "
                            f"got {header[:3]}")
        try:
            table = pd.read_csv(stream, sep="\t", header=None, names=header)
        except Exception as exc:
            raise DataError(f"{path}: cannot parse the attribute rows ({exc})") from None
    bad = table[header[2:]].isna().any(axis=1)
    if bad.any():
        raise DataError(f"{path}: {int(bad.sum())} row(s) with missing or extra scores, "
                        f"first on line {int(np.flatnonzero(bad)[0]) + 3}")
    table["imagenum"] = table["imagenum"].astype(int)
    duplicated = table.duplicated(["person", "imagenum"])
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise DataError(f"{path}: {row['person']} image {row['imagenum']} has more than one row")
    return table


def crop_and_resize(image: np.ndarray, crop: int = CROP, size: int = FACE_SIZE) -> np.ndarray:
    """The course's ``resize(img[crop:-crop, crop:-crop], (size, size))``: floats in [0, 1]."""
    from skimage.transform import resize

    if crop:
        image = image[crop:-crop, crop:-crop]
    return resize(image, (size, size), anti_aliasing=True).astype(np.float32)


def find_photo_folder(root: Path) -> Path:
    for name in PHOTO_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: no photo folder ({' or '.join(PHOTO_FOLDERS)}/<Name>/<Name>_NNNN.jpg)")


def load_faces(root: str | os.PathLike, size: int = FACE_SIZE, crop: int = CROP) -> ImageSet:
    """Every LFW photo under ``root`` with its attribute row (see the module docstring).

    Raises:
        DataError: no photos, a photo of another size than the first, an unreadable photo,
            a photo with no attribute row (named), or a malformed attribute table.
    """
    root = require_dir(root, "faces folder")
    files = list_images(find_photo_folder(root), recursive=True)
    keys = [parse_photo_name(p) for p in files]
    attrs, note = _attributes_for(root, files, keys)
    first_shape, images = None, []
    for path in files:
        array = load_image_array(path, "RGB")
        first_shape = first_shape or array.shape
        if array.shape != first_shape:
            raise DataError(f"{path}: image of size {array.shape[1]}x{array.shape[0]}, the others are "
                            f"{first_shape[1]}x{first_shape[0]} (the crop of {crop} px per side needs one size)")
        if min(array.shape[:2]) <= 2 * crop:
            raise DataError(f"{path}: image of size {array.shape[1]}x{array.shape[0]} is too small for a "
                            f"{crop} px crop on each side")
        images.append(crop_and_resize(array, crop, size))
    people = sorted({person for person, _ in keys})
    labels = torch.tensor([people.index(person) for person, _ in keys])
    images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    description = (f"{len(files)} LFW photos of {len(people)} people from {root}, cropped by {crop} px and "
                   f"resized to {size}x{size}" + (f", {attrs.shape[1]} attribute scores each" if attrs is not None else ""))
    return ImageSet(images, labels, people, [p.name for p in files], description, attrs, note, "faces")


def _attributes_for(root: Path, files: list[Path], keys: list[tuple[str, int]]) -> tuple[pd.DataFrame | None, str]:
    """The attribute rows of ``files`` in their order (merged on person and image number)."""
    path = root / ATTRIBUTES_FILE
    if not path.is_file():
        return None, f"{path}: attribute table not found (the smile vector needs it)"
    table = read_attributes(path)
    photos = pd.DataFrame(keys, columns=["person", "imagenum"])
    merged = photos.merge(table, on=["person", "imagenum"], how="left", indicator=True)
    missing = np.flatnonzero(merged["_merge"] != "both")
    if len(missing):
        named = ", ".join(str(files[i]) for i in missing[:3])
        raise DataError(f"{path}: no attribute row for {len(missing)} photo(s): {named}"
                        + (" ..." if len(missing) > 3 else ""))
    unused = len(table) - len(merged)
    if unused:
        print(f"note: {unused} attribute row(s) of {path} have no photo under {root} (not used)")
    return merged.drop(columns=["person", "imagenum", "_merge"]), ""


def make_faces(n: int = 600, size: int = FACE_SIZE, seed: int = 0, people: int = 30) -> ImageSet:
    """Generated cartoon faces with real-valued ``Smiling`` (the mouth's curvature) and
    ``Eyeglasses`` scores, for running everything without LFW. Each of ``people`` people
    has a face shape, skin and hair colour; photos vary pose, light and expression."""
    rng = np.random.RandomState(seed)
    person = rng.randint(people, size=n)
    skin = rng.uniform([0.55, 0.35, 0.25], [0.95, 0.8, 0.7], size=(people, 3))[person]
    hair = rng.uniform(0.0, 0.6, size=(people, 3))[person]
    width = rng.uniform(0.5, 0.7, size=people)[person]
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    dx = rng.normal(0, 0.05, size=(n, 1, 1))
    x = x[None] - dx
    y = np.broadcast_to(y, x.shape)
    smile = rng.uniform(-1, 1, size=n)
    glasses = rng.rand(n) < 0.3
    face = (x / width[:, None, None]) ** 2 + (y / 0.8) ** 2 < 1
    hair_mask = face & (y < -0.45)
    eyes = ((np.abs(x) - 0.25) ** 2 + (y + 0.15) ** 2) < 0.06 ** 2
    rims = np.abs(np.sqrt((np.abs(x) - 0.25) ** 2 + (y + 0.15) ** 2) - 0.14) < 0.03
    mouth_y = 0.4 + 0.2 * smile[:, None, None] * (1 - (x / 0.3) ** 2)  # rows grow downwards: corners up
    mouth = (np.abs(y - mouth_y) < 0.045) & (np.abs(x) < 0.3)
    background = rng.uniform(0.1, 0.9, size=(n, 3))
    image = np.where(face[..., None], skin[:, None, None], background[:, None, None])
    image = np.where(hair_mask[..., None], hair[:, None, None], image)
    image = np.where((face & (eyes | mouth))[..., None], 0.1, image)
    image = np.where((glasses[:, None, None] & rims)[..., None], 0.05, image)
    image = image * rng.uniform(0.75, 1.15, size=(n, 1, 1, 1)) + rng.normal(0, 0.02, size=image.shape)
    images = torch.from_numpy(np.clip(image, 0, 1).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    attrs = pd.DataFrame({"Smiling": 2 * smile + rng.normal(0, 0.1, n),
                          "Eyeglasses": np.where(glasses, 1.5, -1.5) + rng.normal(0, 0.3, n)})
    classes = [f"person {i}" for i in range(people)]
    return ImageSet(images, torch.from_numpy(person), classes, [f"generated-{i}" for i in range(n)],
                    f"{n} generated {size}x{size} cartoon faces of {people} people, with Smiling and Eyeglasses scores",
                    attrs, "", "faces")


# -- digits ------------------------------------------------------------------------------------
def load_digits(root: str | os.PathLike) -> ImageSet:
    """MNIST under ``root`` (the test split, plus the train split when present) in [0, 1]."""
    splits = [s for s in ("train", "test") if has_split(root, s)] or ["test"]  # "test": the error names its file
    parts = [load_mnist(root, s) for s in splits]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    tensor = torch.from_numpy(images).float().div_(255).unsqueeze(1)
    return ImageSet(tensor, torch.from_numpy(labels), [str(d) for d in range(10)],
                    [f"digit-{i}" for i in range(len(labels))],
                    f"{len(labels)} MNIST digits ({' + '.join(splits)} split) from {Path(root)}", kind="digits")


def builtin_digits() -> ImageSet:
    """scikit-learn's 1797 8x8 digits, each resized to 20x20 and centred in 28x28 like MNIST."""
    from sklearn.datasets import load_digits as sklearn_digits
    from skimage.transform import resize

    bunch = sklearn_digits()
    small = bunch.images / 16.0
    images = np.zeros((len(small), 28, 28), dtype=np.float32)
    images[:, 4:24, 4:24] = resize(small, (len(small), 20, 20), order=1, anti_aliasing=False)
    return ImageSet(torch.from_numpy(images).clamp_(0, 1).unsqueeze(1), torch.from_numpy(bunch.target).long(),
                    [str(d) for d in range(10)], [f"digit-{i}" for i in range(len(small))],
                    f"{len(small)} scikit-learn 8x8 digits drawn at 28x28", kind="digits")


def random_shifts(images: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image (N, C, H, W) moved by its own whole-pixel offset in ``[-max_shift, max_shift]``
    along each axis, the uncovered border filled with zeros (MNIST's background)."""
    n, _, h, w = images.shape
    offsets = torch.randint(-max_shift, max_shift + 1, (2, n), generator=generator)
    padded = F.pad(images, (max_shift,) * 4)
    rows = (torch.arange(h)[None, :] + max_shift - offsets[0][:, None]).to(images.device)   # (N, H)
    cols = (torch.arange(w)[None, :] + max_shift - offsets[1][:, None]).to(images.device)   # (N, W)
    index = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def add_noise(images: torch.Tensor, factor: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """The course's noisy copy ``X + factor * N(0, 1)`` (not clipped)."""
    noise = torch.randn(images.shape, generator=generator, device=images.device if generator is None else "cpu")
    return images + factor * noise.to(images.device)


def jitter_faces(images: torch.Tensor, shift: float = 3.0, scale: float = 0.05, rotate: float = 0.0,
                 brightness: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training augmentation that keeps aligned faces faces: each image (N, C, H, W) is moved by
    up to ``shift`` pixels in x and y, scaled by a factor in ``1 +- scale``, turned by up to
    ``rotate`` degrees (bilinear resampling, border pixels repeated) and its brightness
    multiplied by ``1 +- brightness`` (then clipped to [0, 1]); all uniform, drawn per image."""
    n, _, height, width = images.shape
    device = images.device if generator is None else "cpu"

    def uniform(*shape):  # in [-1, 1]
        return (2 * torch.rand(*shape, generator=generator, device=device) - 1).to(images.device)

    angle = uniform(n) * rotate * torch.pi / 180
    zoom = 1 + uniform(n) * scale
    move = uniform(n, 2) * shift * 2 / torch.tensor([width, height], device=images.device)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(images, grid.to(images.dtype), padding_mode="border", align_corners=False)
    if brightness:
        out = (out * (1 + brightness * uniform(n, 1, 1, 1))).clamp(0, 1)
    return out


# -- what the commands read --------------------------------------------------------------------
def load_dataset(kind: str, data_dir=None, n_images: int = 600, announce: bool = True,
                 builtin: bool = False) -> tuple[ImageSet, DataSource]:
    """The faces or the digits: ``--data-dir``, else ``$DLS_DATA/faces|mnist``, else built-in
    (``builtin=True``: the built-in set whatever is on disk, for runs trained on it)."""
    faces = kind == "faces"
    what = (f"{n_images} generated cartoon faces (built-in)" if faces
            else "scikit-learn's 1797 8x8 digits drawn at 28x28 (built-in)")
    if builtin:
        source = DataSource(None, "built-in", f"data: {what}")
        if announce:
            echo(source.description)
    else:
        source = resolve_data_root("faces" if faces else "mnist", data_dir, what, announce)
    if faces:
        return (make_faces(n_images) if source.builtin else load_faces(source.root)), source
    return (builtin_digits() if source.builtin else load_digits(source.root)), source


def Images(data: ImageSet, flip: bool = False) -> InMemoryImages:
    """``(image, label)`` pairs, randomly flipped left-right when ``flip``."""
    return InMemoryImages(data.images, data.labels, flip)


def add_download_arg(group) -> None:
    """The ``--download`` option of the commands that read digits."""
    group.add_argument("--download", action="store_true",
                       help=f"digits: fetch the full MNIST with torchvision into --data-dir (default {DOWNLOAD_DIR}) "
                            "first, where the network allows")


def fetch_digits(args, parser, dataset: str) -> None:
    """With ``--download``: the full MNIST into ``--data-dir`` (created; default
    :data:`DOWNLOAD_DIR`), which the command then reads. Without it, nothing."""
    if not args.download:
        return
    if dataset != "digits":
        parser.error("--download: only the digits (MNIST) can be downloaded")
    args.data_dir = args.data_dir or DOWNLOAD_DIR
    echo(f"download: MNIST into {Path(args.data_dir).resolve() / RAW_DIR} (torchvision; files already there are kept)")
    download_mnist(args.data_dir)


def run_data(settings: dict, dataset: str, shape, data_dir=None) -> tuple[ImageSet | None, ImageSet, DataSource, bool]:
    """The images of a trained run (``settings``: its ``args.json``; ``dataset`` and ``shape``:
    its model's data kind and image shape): its training images and the images to score. On
    the run's own data (``data_dir`` None or the same folder) the images to score are its
    held-out test split, rebuilt from ``data_root``, ``split_seed`` and ``n_images``; on other
    data, every image. ``same`` says which. The training images are ``None`` when the run's
    data cannot be read any more.

    Raises:
        DataError: settings without those entries, or images of another shape than ``shape``.
    """
    try:
        trained_root, split_seed, n_images = settings["data_root"], settings["split_seed"], settings["n_images"]
    except KeyError as exc:
        raise DataError(f"the run's args.json has no {exc} entry: not written by hw_autoencoder.train") from None
    data_dir = data_dir or trained_root
    data, source = load_dataset(dataset, data_dir, n_images, builtin=data_dir is None)
    if tuple(data.shape) != tuple(shape):
        raise DataError(f"{source.root or 'built-in data'}: images of shape {tuple(data.shape)}, the model was "
                        f"trained on {tuple(shape)}")
    same = (str(source.root) if source.root else None) == trained_root
    train_ix, _, test_ix = split_indices(len(data), split_seed)
    if same:
        return data.subset(train_ix), data.subset(test_ix), source, True
    try:
        own, _ = load_dataset(dataset, trained_root, n_images, announce=False, builtin=trained_root is None)
    except DataError as exc:
        echo(f"note: the run's training data cannot be read ({exc}): no PCA / classifier figures")
        return None, data, source, False
    return own.subset(split_indices(len(own), split_seed)[0]), data, source, False
