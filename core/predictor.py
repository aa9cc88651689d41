"""The predictor interface: a trained run of an image homework, loaded once, answering for one
image (or one seed) at a time, the same way on the command line and in the web service.

    predictor = load_predictor("runs/hw_segment/20260101-120000")
    result = predictor.predict(open_image(Path("lesion.png").read_bytes()))
    result["area"], result["mask_png"]

``python -m hw_<name>.predict --run RUN IMAGE ...`` and ``python -m core.serve --run RUN`` both
go through :func:`load_predictor` and :meth:`Predictor.predict`, so they give identical
answers; :mod:`core.serve` holds no homework logic.

Which homework a run folder belongs to
    ``args.json`` in the run folder holds ``"homework": "hw_<name>"`` (written by
    :meth:`core.runs.RunDir.start`; :func:`core.runs.run_homework` reads it). Only names of
    the form ``hw_<letters, digits, _>`` are ever imported.

What a homework provides
    ``hw_<name>/predict.py`` defines ``load_predictor(run_dir: Path) -> Predictor``: it loads
    the run's model with the homework's ``load_model(run)`` (:mod:`core.runs`: the model file,
    read weights-only, rebuilt in eval mode on the CPU) and returns a :class:`Predictor`
    subclass that implements
    :meth:`Predictor.predict` (image kinds) or :meth:`Predictor.generate` (generation). The
    same module's command line is ``def main(argv=None): predict_main("hw_<name>", argv)``
    run under ``core.cli.run_command`` (see :func:`predict_main`); ``hw_segment/predict.py``
    is the example to copy.

The Predictor's attributes
    ``name``      the model's name: the run folder's name (the service makes names unique)
    ``homework``  ``"hw_segment"``, ...
    ``kind``      one of :data:`KINDS`: classification, segmentation, detection, generation
    ``info``      JSON-able dict: ``classes`` (list of class names, ``[]`` if none),
                  ``input_size`` ([height, width] the model sees, or None), ``metrics`` (the
                  run's ``metrics.json``, ``{}`` if absent), plus homework-specific entries
                  (e.g. ``model``: "unet")

Results (JSON-able dicts, built with the helpers below so every homework answers alike)
    classification  ``{"kind", "label", "probability", "classes": [{"label", "probability"}]}``:
                    every class, sorted by probability (highest first); ``label`` is the top one
    segmentation    ``{"kind", "width", "height", "area", "area_fraction", "mask_png"}``: the
                    mask at the image's own size as a base64 8-bit PNG (255 = foreground), its
                    area in pixels and as a fraction of the image
    detection       ``{"kind", "width", "height", "boxes": [{"label", "score", "box"}]}``: boxes
                    ``[x_min, y_min, x_max, y_max]`` in the image's pixels, by score (highest first)
    generation      ``{"kind", "seed", "count", "width", "height", "grid_png"}``: a grid of
                    ``count`` samples drawn from ``seed`` as a base64 PNG of width x height

    Build them with :func:`classification_result` (probabilities, classes),
    :func:`segmentation_result` (a boolean mask at the image's size), :func:`detection_result`
    (boxes, scores, labels, width, height) and :func:`generation_result` (samples in [0, 1]);
    :func:`summarize` says a result in one line and :func:`render` draws it.

Images come in as bytes and are decoded by :func:`open_image`, with a limit on the pixel count
(decompression bombs are refused before decoding) and errors that say what is wrong. The
service calls ``predict`` from several threads at once: keep no per-call state on the
predictor (a model in eval mode under ``torch.no_grad`` is fine).
"""
from __future__ import annotations

import base64
import importlib
import io

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from .errors import UserError
from .runs import read_metrics, run_homework


KINDS = ("classification", "segmentation", "detection", "generation")
MAX_PIXELS = 40_000_000  # 40 megapixels: a 7000 x 5700 photo; decoded RGB that is 120 MB


class ImageError(UserError):
    """An upload or file that cannot be used as an image. ``reason`` is one of
    ``not_image``, ``truncated``, ``too_large`` (too many pixels)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


# -- images in ------------------------------------------------------------------------------------
def open_image(data: bytes, max_pixels: int = MAX_PIXELS, what: str = "image") -> Image.Image:
    """Decode image bytes into an RGB PIL image (the first frame of an animation).

    The header is read first and images of more than ``max_pixels`` pixels are refused before
    their pixels are decoded. ``what`` names the input in the error messages.

    Raises:
        ImageError: not an image PIL can read, a truncated or corrupt file, too many pixels.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise ImageError(f"{what}: more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; the limit is "
                         f"{max_pixels:,}", "too_large") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ImageError(f"{what}: not an image (no image format recognised in {len(data)} bytes)",
                         "not_image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{what}: {width}x{height} is {width * height:,} pixels; the limit is "
                         f"{max_pixels:,}", "too_large")
    try:
        image.load()
        return image.convert("RGB")
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ... for broken data
        raise ImageError(f"{what}: truncated or corrupt {image.format} image ({exc})", "truncated") from None


def encode_png(array: np.ndarray) -> str:
    """A uint8 array (H, W) or (H, W, 3) as a base64 PNG string."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_png(text: str) -> np.ndarray:
    """The array of a base64 PNG string (inverse of :func:`encode_png`)."""
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        return np.asarray(image)


# -- results out ----------------------------------------------------------------------------------
def classification_result(probabilities: Sequence[float], classes: Sequence[str]) -> dict:
    """Every class with its probability, highest first (ties keep the class order)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(probabilities) != len(classes):
        raise ValueError(f"{len(probabilities)} probabilities for {len(classes)} classes")
    order = np.argsort(-probabilities, kind="stable")
    ranked = [{"label": str(classes[i]), "probability": float(probabilities[i])} for i in order]
    return {"kind": "classification", "label": ranked[0]["label"], "probability": ranked[0]["probability"],
            "classes": ranked}


def segmentation_result(mask: np.ndarray) -> dict:
    """A boolean mask (H, W) at the image's size: its PNG, area in pixels and fraction."""
    mask = np.asarray(mask, dtype=bool)
    area = int(mask.sum())
    return {"kind": "segmentation", "width": int(mask.shape[1]), "height": int(mask.shape[0]), "area": area,
            "area_fraction": area / mask.size, "mask_png": encode_png(mask.astype(np.uint8) * 255)}


def detection_result(boxes, scores, labels: Sequence[str], width: int, height: int) -> dict:
    """Boxes (N, 4) ``x_min, y_min, x_max, y_max`` in the image's pixels, sorted by score."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    order = np.argsort(-scores, kind="stable")
    return {"kind": "detection", "width": int(width), "height": int(height),
            "boxes": [{"label": str(labels[i]), "score": float(scores[i]), "box": [float(v) for v in boxes[i]]}
                      for i in order]}


def generation_result(samples: torch.Tensor, seed: int, nrow: int | None = None) -> dict:
    """Samples (N, C, H, W) in [0, 1] laid out as a grid (2 px gaps) and encoded as a PNG."""
    from torchvision.utils import make_grid

    count = len(samples)
    nrow = nrow or max(1, int(np.ceil(np.sqrt(count))))
    grid = make_grid(samples.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # RGB (grey samples repeated)
    return {"kind": "generation", "seed": int(seed), "count": count, "width": int(array.shape[1]),
            "height": int(array.shape[0]), "grid_png": encode_png(array)}


def summarize(result: dict) -> str:
    """One line that says what a result is (the command line prints it)."""
    kind = result["kind"]
    if kind == "classification":
        top = result["classes"][:3]
        return ", ".join(f"{c['label']} {c['probability']:.1%}" for c in top)
    if kind == "segmentation":
        return f"mask area {result['area']} px ({result['area_fraction']:.1%} of {result['width']}x{result['height']})"
    if kind == "detection":
        boxes = result["boxes"]
        return f"{len(boxes)} boxes" + "".join(f"; {b['label']} {b['score']:.2f}" for b in boxes[:5])
    return f"{result['count']} samples from seed {result['seed']}"


def render(result: dict, image: Image.Image | None = None) -> Image.Image:
    """A picture of a result: the mask over the image (red), the boxes, the sample grid, or the
    image with its top class written on it."""
    kind = result["kind"]
    if kind == "generation":
        return Image.fromarray(decode_png(result["grid_png"])).convert("RGB")
    picture = image.convert("RGB").copy()
    draw = ImageDraw.Draw(picture)
    if kind == "segmentation":
        mask = decode_png(result["mask_png"]) > 127
        array = np.asarray(picture).astype(np.float32)
        array[mask] = 0.55 * array[mask] + 0.45 * np.array([255, 0, 0])
        picture = Image.fromarray(array.round().astype(np.uint8))
        draw = ImageDraw.Draw(picture)
    elif kind == "detection":
        for box in result["boxes"]:
            draw.rectangle(box["box"], outline=(255, 0, 0), width=2)
            draw.text((box["box"][0] + 2, box["box"][1] + 1), f"{box['label']} {box['score']:.2f}", fill=(255, 0, 0))
    draw.text((4, 4), summarize(result), fill=(255, 255, 0))
    return picture


# -- the interface --------------------------------------------------------------------------------
class Predictor:
    """A trained model of one run, ready to answer (see the module docstring)."""

    def __init__(self, run_dir: str | Path, kind: str, classes: Sequence[str] = (),
                 input_size: Sequence[int] | None = None, **extra):
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r}: expected one of {', '.join(KINDS)}")
        self.run_dir = Path(run_dir)
        self.name = self.run_dir.resolve().name
        self.homework = run_homework(self.run_dir)
        self.kind = kind
        self.info = {"classes": [str(c) for c in classes],
                     "input_size": [int(s) for s in input_size] if input_size else None,
                     "metrics": read_metrics(self.run_dir), **extra}

    def predict(self, image: Image.Image) -> dict:
        """The result for one RGB image (classification, segmentation, detection)."""
        raise NotImplementedError(f"a {self.kind} model takes no image")

    def generate(self, seed: int = 0, count: int = 16) -> dict:
        """A grid of ``count`` samples drawn from ``seed`` (generation)."""
        raise NotImplementedError(f"a {self.kind} model does not generate samples")

    def describe(self) -> dict:
        """Name, homework, kind and info, as ``GET /models`` lists them."""
        return {"name": self.name, "homework": self.homework, "kind": self.kind, **self.info}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, homework={self.homework!r}, kind={self.kind!r})"


def load_predictor(run_dir: str | Path) -> Predictor:
    """The predictor of a run folder: ``<homework>.predict.load_predictor(run_dir)``.

    Raises:
        UserError: not a run folder, a homework without a predictor, unreadable weights.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run folder not found")
    homework = run_homework(run_dir)
    try:
        module = importlib.import_module(f"{homework}.predict")
    except ModuleNotFoundError as exc:
        if exc.name not in (homework, f"{homework}.predict"):
            raise
        raise UserError(f"{run_dir}: written by {homework}, which has no predictor ({homework}/predict.py)") from None
    loader = getattr(module, "load_predictor", None)
    if loader is None:
        raise UserError(f"{run_dir}: {homework}.predict has no load_predictor(run_dir)")
    predictor = loader(run_dir)
    if not isinstance(predictor, Predictor):
        raise TypeError(f"{homework}.predict.load_predictor returned {type(predictor).__name__}, not a Predictor")
    return predictor


# -- the predict command every image homework shares ----------------------------------------------
def predict_main(homework: str, argv: list[str] | None = None, results_file: str = "predictions.json",
                 generator: bool = False) -> dict:
    """``python -m <homework>.predict --run RUN IMAGE [IMAGE ...] [--out DIR]`` (with ``generator``,
    also ``--seed``/``--count``: a homework whose runs may draw samples): prints one line per image and writes ``results_file`` (the results exactly
    as the web service returns them, ``{input: result}``) and a picture of each result into
    ``DIR`` (default ``<run>/predict-<timestamp>/``; ``--run-dir`` is the same option under the
    name the train commands use). Returns ``{input: result}``."""
    from . import cli, runs

    parser = cli.make_parser(f"{homework}.predict", "Predict with a trained run, image by image.")
    parser.add_argument("--run", required=True, help=f"run folder written by {homework}.train")
    parser.add_argument("images", nargs="*", help="image files (any format Pillow reads)")
    if generator:
        parser.add_argument("--seed", type=int, default=0, help="generators: seed of the samples")
        parser.add_argument("--count", type=cli.positive_int, default=16, help="generators: number of samples")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=MAX_PIXELS,
                        help="refuse images with more pixels")
    outputs = cli.add_run_args(parser, default="<run>/predict-<timestamp>")
    outputs.add_argument("--out", dest="run_dir", metavar="DIR", default=None,
                         help=f"write {results_file} and the pictures here (default <run>/predict-<timestamp>; "
                              "the same as --run-dir)")
    args = cli.parse_args(parser, argv)
    if generator and args.count > 256:
        parser.error(f"--count {args.count}: expected at most 256")
    predictor = load_predictor(args.run)
    if predictor.kind != "generation" and not args.images:
        parser.error("give at least one image")
    print(f"model: {predictor.name} ({predictor.homework}, {predictor.kind}) from {args.run}; "
          f"data: {len(args.images) or 'no'} image file(s) from the command line")
    images = {}  # every image is read before any output is written
    for path in map(Path, args.images):
        if not path.is_file():
            raise UserError(f"{path}: image file not found")
        images[str(path)] = open_image(path.read_bytes(), args.max_pixels, what=str(path))
    run = runs.RunDir.create(homework, args, parent=args.run, prefix="predict-")  # a new folder each time
    results = {}
    if predictor.kind == "generation":
        if not generator:
            raise TypeError(f"{homework}.predict serves a generator: call predict_main with generator=True")
        results[f"seed {args.seed}"] = result = predictor.generate(args.seed, args.count)
        render(result).save(run / f"samples-seed{args.seed}.png")
        print(f"seed {args.seed}: {summarize(result)}")
    for i, (path, image) in enumerate(images.items()):
        results[path] = result = predictor.predict(image)
        render(result, image).save(run / f"{i:03d}-{Path(path).stem}.png")
        print(f"{path}: {summarize(result)}")
    run.save_json(results_file, results)
    run.summary()
    return results

