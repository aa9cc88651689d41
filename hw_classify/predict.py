"""Predict the class of images with a trained run.

    python -m hw_classify.predict --run runs/hw_classify/RUN IMAGE [IMAGE ...]

prints the top three classes of each image with their probabilities and writes every class's
probability to ``RUN/predict-<timestamp>/predictions.json`` (:func:`core.predictor.predict_main`).
``load_predictor(run_dir)`` is what the command and the web service (``core.serve``) share, so
they answer alike. :class:`Ensemble` does the work: one run's or several runs' averaged class
probabilities for a batch of images; ``submit`` uses it for whole test folders.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import cli
from core.data import rgb_array
from core.device import pick_device
from core.errors import UserError
from core.inference import predict
from core.predictor import Predictor, classification_result, predict_main

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


class Ensemble:
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
        # test-time views: the whole image, and with TTA also its centre crop (each also mirrored)
        self.views = [[build_transform(p["size"], "none", p["mean"], p["std"], center_crop=crop)
                       for crop in ((False, True) if tta else (False,))] for p in self.payloads]

    @property
    def id_column(self) -> str:
        return self.payloads[0]["id_column"]

    @property
    def label_column(self) -> str:
        return self.payloads[0]["label_column"]

    def load_sizes(self) -> list[int]:
        return [p["load_size"] for p in self.payloads]

    def probabilities(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """(N, K) class probabilities, averaged over the runs (and with ``tta`` over the whole
        image and its centre crop, each as is and mirrored: four views).

        ``images`` are PIL images, or uint8 arrays already at the load size of every run."""
        total = torch.zeros(len(images), len(self.classes))
        for model, views, load in zip(self.models, self.views, self.load_sizes()):
            arrays = [img if isinstance(img, np.ndarray) else rgb_array(img, load) for img in images]
            for view in views:
                x = torch.stack([view(a) for a in arrays])
                total += predict(model, x, self.batch_size, self.device, tta_flip=self.tta, activation="softmax",
                                 channels_last=self.device.type == "cpu") / len(views)
        return total / len(self.models)


class ClassificationPredictor(Predictor):
    """A hw_classify run behind :mod:`core.predictor`'s interface (the command line and the
    web service): every class with its probability, most likely first."""

    def __init__(self, run_dir: str | os.PathLike, ensemble: Ensemble):
        payload = ensemble.payloads[0]
        super().__init__(run_dir, kind="classification", classes=ensemble.classes,
                         input_size=(payload["size"], payload["size"]), model=payload["arch"])
        self.ensemble = ensemble

    def predict(self, image: Image.Image) -> dict:
        return classification_result(self.ensemble.probabilities([image])[0].tolist(), self.ensemble.classes)


def load_ensemble(run_dirs: str | os.PathLike | Sequence[str | os.PathLike], device: str = "cpu",
                  tta: bool = False) -> Ensemble:
    """An :class:`Ensemble` of one run folder or several."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    return Ensemble([read_model_file(r) for r in run_dirs], device=device, tta=tta)


def load_predictor(run_dir: str | os.PathLike, tta: bool = False) -> ClassificationPredictor:
    """The predictor of a ``hw_classify.train`` run (weights read weights-only, CPU, eval mode)."""
    return ClassificationPredictor(run_dir, load_ensemble(run_dir, "cpu", tta))


def main(argv: list[str] | None = None) -> dict:
    return predict_main("hw_classify", argv)


if __name__ == "__main__":
    cli.run_command(main)
