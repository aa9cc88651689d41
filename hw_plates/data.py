"""Licence-plate data: plate crops with their texts, car photos with plate boxes, the held-out
split, the built-in rendered plates and the reader's augmentations.

The layout (``$DLS_DATA/plates`` or ``--data-dir``)::

    recognition/images/<name>.jpg   recognition/labels.csv   (file,text,region)
    detection/images/<name>.jpg     detection/annotations.json
        [{"file", "width", "height", "region", "plates": [{"box": [x1, y1, x2, y2], "text"}]}]

A crop named like a detection photo is that photo's plate, so the split is made per plate
*text* (:func:`split_of`): a photo, the crop cut from it and any other photo of the same plate
always fall on the same side, and the held-out plates are never seen in training.

Without data on disk, :func:`make_rendered_plates` draws plates: random texts in a bold font
(DejaVu Sans Bold if installed, else PIL's default font) on plate-like backgrounds, pasted
into simple street-like scenes.
"""
from __future__ import annotations

import hashlib
import json
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import Dataset

from core.data import DataError, list_images, load_image, require_file
from core.console import echo

from .text import Alphabet

SPLITS = ("train", "val", "test")
TEST_FRACTION, VAL_FRACTION = 0.2, 0.1


def split_of(key: str, test: float = TEST_FRACTION, val: float = VAL_FRACTION) -> str:
    """``train``, ``val`` or ``test`` for a plate, from a hash of its text: stable across runs,
    data orders and machines, and the same for a photo and the crops cut from it."""
    u = int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 16 ** 8
    return "test" if u < test else "val" if u < test + val else "train"


# -- plate crops ---------------------------------------------------------------------------------
@dataclass
class CropSet:
    """Plate crops as uint8 arrays (H, W, 3) at the reader's preparation size, with texts."""

    images: list[np.ndarray]
    texts: list[str]
    names: list[str]
    regions: list[str]
    description: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index) -> "CropSet":
        index = list(index)
        return CropSet([self.images[i] for i in index], [self.texts[i] for i in index],
                       [self.names[i] for i in index], [self.regions[i] for i in index], self.description)

    def split(self, name: str) -> "CropSet":
        return self.subset(i for i, t in enumerate(self.texts) if split_of(t) == name)

    def __add__(self, other: "CropSet") -> "CropSet":
        return CropSet(self.images + other.images, self.texts + other.texts, self.names + other.names,
                       self.regions + other.regions, self.description)


def prepare_crop(image: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray:
    """A plate crop resized (aspect not kept, as CRNNs read plates) to twice the reader's input
    size, the resolution the augmentations work at; :func:`to_input` halves it."""
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.ndim != 3 or array.shape[0] < 2 or array.shape[1] < 2:
        raise ValueError(f"crop of shape {array.shape} is empty or too small (needs at least 2x2 pixels)")
    big = array.shape[0] > 2 * height or array.shape[1] > 2 * width
    return cv2.resize(array, (2 * width, 2 * height), interpolation=cv2.INTER_AREA if big else cv2.INTER_LINEAR)


def to_input(prepared: np.ndarray) -> torch.Tensor:
    """A prepared crop (2H, 2W, 3) uint8 as the reader's input tensor (3, H, W) in [0, 1]."""
    h, w = prepared.shape[0] // 2, prepared.shape[1] // 2
    small = cv2.resize(prepared, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small).permute(2, 0, 1).float().div_(255)


def read_labels(root: Path, alphabet: Alphabet) -> pd.DataFrame:
    """``recognition/labels.csv`` checked: the columns, every text non-empty and inside the alphabet."""
    path = require_file(root / "recognition" / "labels.csv", "labels file (recognition/labels.csv)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    missing = [c for c in ("file", "text") if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected file,text[,region])")
    if "region" not in table.columns:
        table["region"] = ""
    for line, (file, text) in enumerate(zip(table["file"], table["text"]), start=2):
        if not text:
            raise DataError(f"{path}, line {line}: empty text for {file}")
        bad = alphabet.unknown(text)
        if bad:
            raise DataError(f"{path}, line {line}: text {text!r} of {file} has character(s) {''.join(bad)!r} "
                            f"outside the alphabet {alphabet.chars}")
    return table


def load_crops(root: str | os.PathLike, alphabet: Alphabet, height: int, width: int) -> CropSet:
    """Every crop of ``recognition/``, prepared for the reader (see :func:`prepare_crop`)."""
    root = Path(root)
    table = read_labels(root, alphabet)
    images = []
    for file in table["file"]:
        path = root / "recognition" / "images" / file
        image = load_image(path)
        try:
            images.append(prepare_crop(image, height, width))
        except ValueError as exc:
            raise DataError(f"{path}: {exc}") from None
    return CropSet(images, table["text"].tolist(), table["file"].tolist(), table["region"].tolist(),
                   f"{len(table)} plate crops from {root / 'recognition'}")


# -- photos with plate boxes ------------------------------------------------------------------------
@dataclass
class Photo:
    """A photo (uint8 array, or a path read on demand) with its plates' boxes and texts."""

    name: str
    boxes: np.ndarray                     # (K, 4) float x1, y1, x2, y2 in pixels, x2/y2 exclusive
    texts: list[str]
    path: Path | None = None
    image: np.ndarray | None = field(default=None, repr=False)

    def load(self) -> np.ndarray:
        return self.image if self.image is not None else np.asarray(load_image(self.path))

    @property
    def split(self) -> str:
        return split_of(sorted(self.texts)[0] if self.texts else self.name)


def load_photos(root: str | os.PathLike, alphabet: Alphabet | None = None) -> list[Photo]:
    """The photos of ``detection/annotations.json``, each checked against its image file.

    Raises:
        DataError: a missing or unreadable file, an entry without ``plates``, a box that is not
        inside its photo or is empty, a text outside the alphabet.
    """
    root = Path(root)
    path = require_file(root / "detection" / "annotations.json", "annotations file (detection/annotations.json)")
    try:
        entries = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a list of photos, got {type(entries).__name__}")
    photos = [_photo(entry, i, path, root / "detection" / "images", alphabet) for i, entry in enumerate(entries)]
    listed = {p.name for p in photos}
    unlisted = [f.name for f in list_images(root / "detection" / "images") if f.name not in listed]
    if unlisted:
        echo(f"note: {len(unlisted)} image(s) in {root / 'detection' / 'images'} have no entry in "
             f"annotations.json and are not used (first: {unlisted[0]})")
    return photos


def _photo(entry, index: int, path: Path, images: Path, alphabet: Alphabet | None) -> Photo:
    where = f"{path}, photo #{index}"
    if not isinstance(entry, dict) or "file" not in entry:
        raise DataError(f"{where}: expected an object with 'file' and 'plates'")
    where = f"{path}, {entry['file']}"
    if not isinstance(entry.get("plates"), list):
        raise DataError(f"{where}: no 'plates' list (a photo without annotation)")
    image_path = images / entry["file"]
    if not image_path.is_file():
        raise DataError(f"{where}: image file {image_path} not found")
    width, height = entry.get("width"), entry.get("height")
    if width is None or height is None:
        with Image.open(image_path) as im:
            width, height = im.size
    boxes, texts = [], []
    for plate in entry["plates"]:
        box = plate.get("box") if isinstance(plate, dict) else None
        if not (isinstance(box, list) and len(box) == 4):
            raise DataError(f"{where}: a plate without a 4-number 'box'")
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise DataError(f"{where}: box {box} is empty or not inside the {width}x{height} photo")
        text = str(plate.get("text", ""))
        if alphabet is not None and alphabet.unknown(text):
            raise DataError(f"{where}: text {text!r} has character(s) {''.join(alphabet.unknown(text))!r} "
                            f"outside the alphabet {alphabet.chars}")
        boxes.append([x1, y1, x2, y2])
        texts.append(text)
    return Photo(entry["file"], np.asarray(boxes, dtype=np.float32).reshape(-1, 4), texts, path=image_path)


def cut_plate(image: np.ndarray, box, margin: float = 0.0) -> np.ndarray:
    """The box's pixels, widened by ``margin`` times its height on every side (:func:`grown`),
    clipped to the photo."""
    x1, y1, x2, y2 = grown(box, margin)
    h, w = image.shape[:2]
    x1, y1 = int(max(0, np.floor(x1))), int(max(0, np.floor(y1)))
    x2, y2 = int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2)))
    return image[y1:y2, x1:x2]


def grown(box, margin: float) -> list[float]:
    """``box`` grown by ``margin`` times its height on every side (before :func:`cut_plate` clips it)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = margin * (y2 - y1)
    return [x1 - pad, y1 - pad, x2 + pad, y2 + pad]


def viewed(box, view) -> list[float]:
    """``box`` with ``view`` = (left, right, top, bottom) fractions of its width (left, right) or
    height (top, bottom) added on each side; a negative fraction takes away."""
    x1, y1, x2, y2 = (float(v) for v in box)
    left, right, top, bottom = (float(f) for f in view)
    w, h = x2 - x1, y2 - y1
    return [x1 - left * w, y1 - top * h, x2 + right * w, y2 + bottom * h]


# -- built-in rendered plates -------------------------------------------------------------------
def plate_font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans Bold when the system has it, else PIL's built-in font."""
    for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


_BACKGROUNDS = [(235, 235, 230), (250, 215, 60), (225, 230, 240), (245, 245, 250), (200, 205, 200)]
_INKS = [(20, 20, 20), (25, 30, 110), (140, 20, 20), (30, 30, 40)]


def random_text(rng: np.random.Generator, alphabet: Alphabet) -> str:
    """A plate-like text: 5-8 characters, letters and digits in runs (``AB123C``-like)."""
    letters = [c for c in alphabet.chars if c.isalpha()] or list(alphabet.chars)
    digits = [c for c in alphabet.chars if c.isdigit()] or list(alphabet.chars)
    n = int(rng.integers(5, 9))
    text, pool = [], letters if rng.random() < 0.5 else digits
    for _ in range(n):
        if rng.random() < 0.35:
            pool = digits if pool is letters else letters
        text.append(pool[int(rng.integers(len(pool)))])
    return "".join(text)


def render_plate(text: str, rng: np.random.Generator) -> np.ndarray:
    """A plate image: a bordered plate-coloured card with ``text`` in a dark bold font, and on
    some plates a small header line, as US plates have."""
    font_size = int(rng.integers(34, 46))
    font = plate_font(font_size)
    left, top, right, bottom = font.getbbox(text)
    tw, th = right - left, bottom - top
    pad_x, pad_y = int(rng.integers(8, 20)), int(rng.integers(8, 16))
    header = rng.random() < 0.4
    header_h = font_size // 3 + 4 if header else 0
    w, h = tw + 2 * pad_x, th + 2 * pad_y + header_h
    background = tuple(int(c) for c in np.clip(np.array(_BACKGROUNDS[rng.integers(len(_BACKGROUNDS))])
                                               + rng.integers(-15, 16, 3), 0, 255))
    ink = _INKS[rng.integers(len(_INKS))]
    plate = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(plate)
    draw.rectangle([1, 1, w - 2, h - 2], outline=ink, width=2)
    if header:
        small = plate_font(max(8, font_size // 3))
        draw.text((w // 2, 3), "".join(rng.choice(list(string.ascii_uppercase), 8)), font=small, fill=ink,
                  anchor="mt")
    draw.text((pad_x - left, pad_y + header_h - top), text, font=font, fill=ink)
    return np.asarray(plate)


def render_scene(plate: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (384, 288)
                 ) -> tuple[np.ndarray, list[float]]:
    """A street-like photo (sky/road gradient, car-like boxes) with ``plate`` pasted on a car."""
    w, h = size
    y = np.linspace(0, 1, h)[:, None, None]
    top, bottom = rng.integers(60, 200, 3), rng.integers(40, 140, 3)
    scene = (top * (1 - y) + bottom * y) * np.ones((1, w, 1))
    scene += rng.normal(0, 6, scene.shape)
    for _ in range(int(rng.integers(1, 4))):  # cars and clutter
        cw, ch = int(rng.integers(w // 5, w // 2)), int(rng.integers(h // 6, h // 2))
        cx, cy = int(rng.integers(0, w - cw)), int(rng.integers(h // 4, h - ch))
        scene[cy:cy + ch, cx:cx + cw] = rng.integers(20, 230, 3)
    pw = int(rng.integers(40, 130))
    ph = max(8, int(round(pw * plate.shape[0] / plate.shape[1])))
    small = cv2.resize(plate, (pw, ph), interpolation=cv2.INTER_AREA)
    x1, y1 = int(rng.integers(4, w - pw - 4)), int(rng.integers(h // 3, h - ph - 4))
    scene[y1:y1 + ph, x1:x1 + pw] = small
    return np.clip(scene, 0, 255).astype(np.uint8), [x1, y1, x1 + pw, y1 + ph]


def make_rendered_plates(n_crops: int, n_photos: int, alphabet: Alphabet, height: int, width: int,
                         seed: int = 0) -> tuple[CropSet, list[Photo]]:
    """``n_crops`` rendered plate crops; the first ``n_photos`` of them are also pasted into scenes."""
    rng = np.random.default_rng(seed)
    texts, images, photos = [], [], []
    for i in range(max(n_crops, n_photos)):
        text = random_text(rng, alphabet)
        plate = render_plate(text, rng)
        texts.append(text)
        images.append(prepare_crop(plate, height, width))
        if i < n_photos:
            scene, box = render_scene(plate, rng)
            photos.append(Photo(f"rendered_{i:04d}", np.asarray([box], dtype=np.float32), [text], image=scene))
    names = [f"rendered_{i:04d}" for i in range(len(texts))]
    crops = CropSet(images, texts, names, ["rendered"] * len(texts),
                    f"{len(texts)} built-in rendered plates ({n_photos} of them in scenes)")
    return crops, photos


# -- the reader's dataset ----------------------------------------------------------------------
def reader_augmentations(seed: int | None = None):
    """Changes that keep every character inside the crop: mild perspective, small rotations,
    shear and zoom (down to 0.85: margins like the detector's cut), blur, noise, lower
    resolution, JPEG, brightness, contrast, colour."""
    import albumentations as A

    border = cv2.BORDER_REPLICATE
    return A.Compose([
        A.Perspective(scale=(0.01, 0.04), border_mode=border, p=0.4),
        A.Affine(scale=(0.85, 1.03), rotate=(-4, 4), shear=(-6, 6), translate_percent=(-0.02, 0.02),
                 border_mode=border, p=0.7),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5)),
                 A.Downscale(scale_range=(0.3, 0.7))], p=0.4),
        A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
        A.ImageCompression(quality_range=(30, 90), p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.3, p=0.6),
        A.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=30, val_shift_limit=20, p=0.3),
        A.ToGray(p=0.1),
    ], seed=seed)


@dataclass(frozen=True)
class PhotoResolution:
    """The size a plate has in a car photo, as uniform draws: ``width`` pixels (drawn on a log
    scale), a height of ``aspect`` times that width (at least 6 pixels) and the photo's JPEG
    ``quality``. The default spans the plates of the shared photos, stored at 640 px."""

    width: tuple[float, float] = (30.0, 180.0)
    aspect: tuple[float, float] = (0.22, 0.55)
    quality: tuple[int, int] = (50, 95)


def at_photo_resolution(image: np.ndarray, rng: np.random.Generator,
                        spec: PhotoResolution = PhotoResolution()) -> np.ndarray:
    """``image`` (a prepared crop) shrunk to a random plate size of ``spec`` with area
    averaging, JPEG-compressed, and enlarged back to its size bilinearly, as a plate cut from a
    photo is; an image already smaller than the draw is returned as it is."""
    height, width = image.shape[:2]
    w = float(np.exp(rng.uniform(np.log(spec.width[0]), np.log(spec.width[1]))))
    h = max(6.0, w * rng.uniform(*spec.aspect))
    if w >= width and h >= height:
        return image
    small = cv2.resize(image, (max(2, round(min(w, width))), max(2, round(min(h, height)))),
                       interpolation=cv2.INTER_AREA)
    quality = int(rng.integers(spec.quality[0], spec.quality[1] + 1))
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        small = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED).reshape(small.shape)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


class CropDataset(Dataset):
    """(image (3, H, W) in [0, 1], text) pairs; augmented when ``augment``: a share ``low_res``
    of the items first brought down to a plate's size in a photo (:func:`at_photo_resolution`,
    drawn from torch's generator, so ``torch.manual_seed`` repeats a run), then the reader's
    augmentations."""

    def __init__(self, crops: CropSet, augment: bool = False, seed: int | None = None, low_res: float = 0.0):
        if not 0.0 <= low_res <= 1.0:
            raise ValueError(f"low_res must be a probability in [0, 1], got {low_res}")
        self.crops, self.low_res = crops, low_res
        self.transform = reader_augmentations(seed) if augment else None

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        image = self.crops.images[i]
        if self.transform is not None:
            if self.low_res and float(torch.rand(())) < self.low_res:
                image = at_photo_resolution(image, np.random.default_rng(int(torch.randint(2 ** 31 - 1, ()))))
            image = self.transform(image=image)["image"]
        return to_input(image), self.crops.texts[i]


@dataclass(frozen=True)
class BoxNoise:
    """How far a detector's box strays from the true one, as uniform draws: the centre moves by
    up to ``shift_x`` of the box width and ``shift_y`` of its height, the box grows by a factor
    in ``scale`` (area-like: width and height alike), its aspect by up to ``aspect`` (width times
    ``1 + a``, height divided by it) and it turns by up to ``rotate`` degrees."""

    shift_x: float = 0.06
    shift_y: float = 0.12
    scale: tuple[float, float] = (0.95, 1.2)
    aspect: float = 0.1
    rotate: float = 3.0


def cut_rotated(image: np.ndarray, box, height: int, width: int, angle: float = 0.0) -> np.ndarray:
    """The box of ``image`` (any size, x2/y2 exclusive) turned by ``angle`` degrees about its
    centre and resized to the reader's preparation size (2 ``height`` x 2 ``width``, as
    :func:`prepare_crop`), in one warp; pixels outside the photo repeat its edge."""
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    out_w, out_h = 2 * width, 2 * height
    if angle == 0.0 and (bw > out_w or bh > out_h):  # a large plate: shrink with area averaging
        return prepare_crop(cut_plate(image, box), height, width)
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta), np.sin(theta)
    sx, sy = bw / out_w, bh / out_h
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # output pixel (u, v) -> photo point: centre + R(angle) @ ((u + .5) sx - bw / 2, (v + .5) sy - bh / 2)
    matrix = np.array([[cos * sx, -sin * sy, 0.0], [sin * sx, cos * sy, 0.0]])
    du, dv = 0.5 * sx - bw / 2, 0.5 * sy - bh / 2
    matrix[0, 2] = cx + cos * du - sin * dv - 0.5
    matrix[1, 2] = cy + sin * du + cos * dv - 0.5
    return cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def noisy_cut(image: np.ndarray, box, height: int, width: int, rng: np.random.Generator,
              noise: BoxNoise = BoxNoise()) -> np.ndarray:
    """A cut of ``image`` at ``box`` moved, resized, stretched and turned by a random draw of
    ``noise``, prepared for the reader (2 ``height`` x 2 ``width``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2 + rng.uniform(-noise.shift_x, noise.shift_x) * w
    cy = (y1 + y2) / 2 + rng.uniform(-noise.shift_y, noise.shift_y) * h
    s, a = rng.uniform(*noise.scale), 1 + rng.uniform(-noise.aspect, noise.aspect)
    w, h = w * s * a, h * s / a
    angle = rng.uniform(-noise.rotate, noise.rotate)
    return cut_rotated(image, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), height, width, angle)


class PhotoCutDataset(Dataset):
    """(image (3, H, W) in [0, 1], text) pairs cut from photos at their true plate boxes, as a
    detector would hand them to the reader: from the photo as loaded (the resolution the
    pipeline has, never the detector's resized input), with box noise (:class:`BoxNoise`).

    With ``augment`` each item is a fresh draw of the noise (seeded from torch's generator, so
    ``torch.manual_seed`` repeats a run) followed by the reader's augmentations; without, the
    noise of item ``i`` is fixed by ``seed`` (a stable validation set); ``noise=None`` cuts the
    exact boxes. ``margin``: each true box is first grown by this many times its height on every
    side (:func:`grown`), as the pipeline cuts the boxes it finds with ``--margin``. ``repeats``
    lists every plate that many times per epoch.
    """

    def __init__(self, photos: Sequence[Photo], height: int, width: int, noise: BoxNoise | None = BoxNoise(),
                 augment: bool = False, repeats: int = 1, seed: int = 0, margin: float = 0.0):
        self.plates = [(i, grown(box, margin), text) for i, photo in enumerate(photos)
                       for box, text in zip(photo.boxes, photo.texts)]
        self.images = [photo.load() for photo in photos]
        self.height, self.width, self.noise, self.repeats, self.seed = height, width, noise, repeats, seed
        self.transform = reader_augmentations(seed) if augment else None

    def __len__(self) -> int:
        return len(self.plates) * self.repeats

    def cut(self, i: int) -> tuple[np.ndarray, str]:
        """Item ``i`` prepared for the reader (2H x 2W uint8), before augmentation, and its text."""
        photo, box, text = self.plates[i % len(self.plates)]
        image = self.images[photo]
        if self.noise is None:
            return prepare_crop(cut_plate(image, box), self.height, self.width), text
        seed = int(torch.randint(2 ** 31 - 1, ())) if self.transform is not None else self.seed * 100003 + i
        return noisy_cut(image, box, self.height, self.width, np.random.default_rng(seed), self.noise), text

    def __getitem__(self, i: int):
        image, text = self.cut(i)
        if self.transform is not None:
            self.transform.set_random_seed(int(torch.randint(2 ** 31 - 1, ())))
            image = self.transform(image=image)["image"]
        return to_input(image), text


def collate_crops(batch) -> tuple[torch.Tensor, list[str]]:
    images, texts = zip(*batch)
    return torch.stack(images), list(texts)
