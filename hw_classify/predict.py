"""Predict the class of images with one trained run (or an ensemble of runs).

    python -m hw_classify.predict --run runs/hw_classify/RUN IMAGE [IMAGE ...] [--top 3] [--tta]
    python -m hw_classify.predict --run RUN_A --run RUN_B IMAGE ...        # an ensemble

For each image, prints the top classes with their probabilities. The same
:class:`Predictor` serves ``submit`` and the web service: ``load_predictor(run_dir)``
returns an object whose ``__call__(PIL.Image)`` gives every class with its probability,
most likely first, as JSON-able data, so the command line and the service answer alike.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import cli
from core.data import load_image, rgb_array
from core.device import pick_device
from core.errors import UserError
from core.inference import predict

from .data import build_transform
from .models import build_model
from .report import MODEL_FORMAT


def read_model_file(run_dir: str | os.PathLike) -> dict:
    """``RUN/model.pt`` (or a model.pt path), read with ``weights_only=True``.

    Raises:
        UserError: no such run folder or file, or not a model written by hw_classify.train.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        where = path.parent if path.name == "model.pt" else path
        raise UserError(f"--run {where}: no model.pt (not a finished hw_classify.train run folder)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path}: not a model written by hw_classify.train")
    return payload


class Predictor:
    """Class probabilities of images for one run or an average over several (an ensemble).

    Every image is prepared as in training's validation: converted to RGB, resized to the
    run's load size, then to its input size, normalised. Runs of an ensemble must share their
    class names; each may have its own architecture and size.
    """

    def __init__(self, payloads: Sequence[dict], device: str | torch.device = "cpu", tta: bool = False,
                 batch_size: int = 32):
        if not payloads:
            raise ValueError("a predictor needs at least one run")
        self.classes: list[str] = list(payloads[0]["classes"])
        for p in payloads[1:]:
            if list(p["classes"]) != self.classes:
                raise UserError("the runs of an ensemble predict different class lists: "
                                f"{self.classes[:4]}... vs {list(p['classes'])[:4]}...")
        self.payloads, self.device, self.tta, self.batch_size = list(payloads), pick_device(str(device)), tta, batch_size
        self.models = []
        for p in self.payloads:
            model = build_model(p["arch"], len(self.classes), "none", p["size"], p["width"]).model
            model.load_state_dict(p["state_dict"])
            self.models.append(model.to(self.device).eval())
        self.transforms = [build_transform(p["size"], "none", p["mean"], p["std"]) for p in self.payloads]

    @property
    def id_column(self) -> str:
        return self.payloads[0]["id_column"]

    @property
    def label_column(self) -> str:
        return self.payloads[0]["label_column"]

    def load_sizes(self) -> list[int]:
        return [p["load_size"] for p in self.payloads]

    def probabilities(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """(N, K) class probabilities, averaged over the runs (and flips with ``tta``).

        ``images`` are PIL images, or uint8 arrays already at the load size of every run."""
        total = torch.zeros(len(images), len(self.classes))
        for model, transform, load in zip(self.models, self.transforms, self.load_sizes()):
            arrays = [img if isinstance(img, np.ndarray) else rgb_array(img, load) for img in images]
            x = torch.stack([transform(a) for a in arrays])
            total += predict(model, x, self.batch_size, self.device, tta_flip=self.tta, activation="softmax",
                             channels_last=self.device.type == "cpu")
        return total / len(self.models)

    def __call__(self, image: Image.Image) -> dict:
        """Every class with its probability, most likely first: ``{"label", "probability",
        "classes": [{"label", "probability"}, ...]}``."""
        probs = self.probabilities([image])[0]
        order = torch.argsort(probs, descending=True, stable=True).tolist()
        ranked = [{"label": self.classes[i], "probability": round(float(probs[i]), 6)} for i in order]
        return {"label": ranked[0]["label"], "probability": ranked[0]["probability"], "classes": ranked}


def load_predictor(run_dirs: str | os.PathLike | Sequence[str | os.PathLike], device: str = "cpu",
                   tta: bool = False) -> Predictor:
    """A :class:`Predictor` for one run folder, or an ensemble of several."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    return Predictor([read_model_file(r) for r in run_dirs], device=device, tta=tta)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_classify.predict", __doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True,
                        help="run folder; repeat (--run A --run B) to average several runs' probabilities")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    parser.add_argument("--tta", action="store_true", help="average with the left-right mirrored image")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    return parser


def main(argv: list[str] | None = None) -> list[dict]:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    if args.top < 1:
        parser.error(f"--top must be a positive integer, got {args.top}")
    images = [load_image(path, mode=None) for path in args.images]  # DataError names a bad file
    predictor = load_predictor(args.run, args.device, args.tta)
    results = []
    for path, image in zip(args.images, images):
        result = predictor(image)
        shown = ", ".join(f"{c['label']} {c['probability']:.3f}" for c in result["classes"][:args.top])
        print(f"{path}: {shown}")
        results.append({"image": str(path), **result})
    return results


if __name__ == "__main__":
    cli.run_command(lambda: main() and None)  # main returns its result for tests; exit status 0
