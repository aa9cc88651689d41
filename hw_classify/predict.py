"""Predict the class of images with a trained run.

    python -m hw_classify.predict --run runs/hw_classify/RUN IMAGE [IMAGE ...]

prints the top three classes of each image with their probabilities and writes every class's
probability to ``RUN/predict-<timestamp>/predictions.json`` (:func:`core.predictor.predict_main`).
``load_predictor(run_dir)`` is what the command and the web service (``core.serve``) share, so
they answer alike. :class:`Ensemble` does the work: one run's or several runs' averaged class
probabilities for a batch of images; ``submit`` uses it for whole test folders. Every run's
model comes from its ``model.pt`` through :func:`hw_classify.load_model`.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from core import cli
from core.data import rgb_array
from core.device import pick_device
from core.errors import UserError
from core.inference import model_outputs
from core.predictor import Predictor, classification_result, predict_main
from core.runs import LoadedModel

from .data import build_transform
from .models import load_model


class Ensemble:
    """Class probabilities of images for one run or an average over several (an ensemble).

    Every image is prepared as in training's validation: converted to RGB, resized to the
    run's load size, then to its input size, normalised. Runs of an ensemble must share their
    class names; each may have its own architecture and size.

    Raises:
        UserError: runs whose class lists differ.
    """

    def __init__(self, runs: Sequence[LoadedModel], device: str | torch.device = "cpu", tta: bool = False,
                 batch_size: int = 32):
        if not runs:
            raise ValueError("a predictor needs at least one run")
        self.classes: list[str] = list(runs[0].extras["classes"])
        for run in runs[1:]:
            if list(run.extras["classes"]) != self.classes:
                raise UserError("the runs of an ensemble predict different class lists: "
                                f"{self.classes[:4]}... ({runs[0].run}) vs {list(run.extras['classes'])[:4]}... "
                                f"({run.run})")
        self.runs, self.device, self.tta, self.batch_size = list(runs), pick_device(str(device)), tta, batch_size
        self.models = [run.model.to(self.device).eval() for run in self.runs]
        # test-time views: the whole image, and with TTA also its centre crop (each also mirrored)
        self.views = [[build_transform(run.config["size"], "none", run.extras["mean"], run.extras["std"],
                                       center_crop=crop)
                       for crop in ((False, True) if tta else (False,))] for run in self.runs]

    def load_sizes(self) -> list[int]:
        """The side each run's images are first resized to."""
        return [run.extras["load_size"] for run in self.runs]

    def probabilities(self, images: Sequence[Image.Image | np.ndarray]) -> torch.Tensor:
        """(N, K) class probabilities, averaged over the runs (and with ``tta`` over the whole
        image and its centre crop, each as is and mirrored: four views).

        ``images`` are PIL images, or uint8 arrays already at the load size of every run."""
        total = torch.zeros(len(images), len(self.classes))
        for model, views, load in zip(self.models, self.views, self.load_sizes()):
            arrays = [img if isinstance(img, np.ndarray) else rgb_array(img, load) for img in images]
            for view in views:
                x = torch.stack([view(a) for a in arrays])
                total += model_outputs(model, x, self.batch_size, self.device, tta_flip=self.tta, activation="softmax",
                                 channels_last=self.device.type == "cpu") / len(views)
        return total / len(self.models)


class ClassificationPredictor(Predictor):
    """A hw_classify run behind :mod:`core.predictor`'s interface (the command line and the
    web service): every class with its probability, most likely first."""

    def __init__(self, ensemble: Ensemble):
        run = ensemble.runs[0]
        size = run.config["size"]
        super().__init__(run.run, kind=run.kind, classes=ensemble.classes, input_size=(size, size),
                         model=run.config["arch"])
        self.ensemble = ensemble

    def predict(self, image: Image.Image) -> dict:
        return classification_result(self.ensemble.probabilities([image])[0].tolist(), self.ensemble.classes)


def load_ensemble(run_dirs: str | os.PathLike | Sequence[str | os.PathLike], device: str = "cpu",
                  tta: bool = False) -> Ensemble:
    """An :class:`Ensemble` of one run folder or several, each read by :func:`hw_classify.load_model`."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    return Ensemble([load_model(r) for r in run_dirs], device=device, tta=tta)


def load_predictor(run_dir: str | os.PathLike, tta: bool = False) -> ClassificationPredictor:
    """The predictor of a ``hw_classify.train`` run: its :func:`hw_classify.load_model` model
    (with ``tta``: four views of each image, see :meth:`Ensemble.probabilities`)."""
    return ClassificationPredictor(load_ensemble(run_dir, "cpu", tta))


def main(argv: list[str] | None = None) -> dict:
    return predict_main("hw_classify", argv)


if __name__ == "__main__":
    cli.run_command(main)
