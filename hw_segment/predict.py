"""Segment lesions in image files with a trained run: the mask at each image's own size.

    python -m hw_segment.predict --run runs/hw_segment/<name> lesion.png [more.jpg ...]

The model comes from the run's ``model.pt`` (:func:`hw_segment.load_model`). Each image is
resized (with anti-aliasing, as in training) to the size it was trained at, the model's logits
are resized back to the image's size (bilinear) and thresholded at the model file's threshold
(logit 0: probability 0.5).
Prints the lesion area of each image and writes ``predictions.json`` and mask overlays into
``<run>/predict-<timestamp>/``. ``python -m core.serve --run RUN`` serves the same predictor
(:func:`load_predictor`, see :mod:`core.predictor`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.cli import run_command
from core.predictor import Predictor, predict_main, segmentation_result
from core.runs import LoadedModel

from .data import resize_image
from .models import load_model


class SegmentationPredictor(Predictor):
    """A hw_segment model: one binary mask (the lesion) per image."""

    def __init__(self, loaded: LoadedModel):
        size = loaded.config["size"]
        super().__init__(loaded.run, kind=loaded.kind, classes=loaded.extras["classes"], input_size=(size, size),
                         model=loaded.config["model"], width=loaded.config["width"])
        self.model, self.size, self.threshold = loaded.model, size, loaded.extras["threshold"]

    @torch.no_grad()
    def logits(self, image: Image.Image) -> torch.Tensor:
        """Logits (H, W) at the image's size."""
        x = resize_image(np.asarray(image.convert("RGB")), self.size)[None]
        logits = self.model(x).float()
        return F.interpolate(logits, size=(image.height, image.width), mode="bilinear", align_corners=False)[0, 0]

    def predict(self, image: Image.Image) -> dict:
        return segmentation_result((self.logits(image) > self.threshold).numpy())


def load_predictor(run_dir: str | Path) -> SegmentationPredictor:
    """The predictor of a ``hw_segment.train`` run: its :func:`hw_segment.load_model` model."""
    return SegmentationPredictor(load_model(run_dir))


def main(argv: list[str] | None = None) -> None:
    predict_main("hw_segment", argv)


if __name__ == "__main__":
    run_command(main)
