"""Read the licence plates in images with a trained run.

    python -m hw_plates.predict --run runs/hw_plates/<name> car1.jpg car2.jpg

A run with a detector finds the plates (scores at least the run's ``--score-threshold``), cuts
each with the run's ``--margin`` and reads it; a run with a reader only (``--stage read``) reads
each image as one plate crop; a run without a reader (``--stage detect``) is refused in one
line. Prints the texts and writes
``predictions.json`` (per image: ``boxes``, each with its ``label`` = the plate's text, its
``score`` and ``box``) and each image with its plates drawn into ``<run>/predict-<timestamp>/``
(or ``--run-dir``). ``python -m core.serve --run RUN`` serves the same predictor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.cli import run_command
from core.errors import UserError
from core.predictor import Predictor, detection_result, predict_main

from .detect import detect_plates
from .models import CRNN, load_model
from .refine import BoxRefiner
from .task import BOX_VIEW, read_boxes, reading_views


def read_photo(image: np.ndarray, reader: CRNN, detector=None, config: dict | None = None,
               beam_width: int = 1, refiner: BoxRefiner | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Plates of an RGB photo (H, W, 3): boxes (K, 4) in its pixels (refined by ``refiner``
    the run's ``refine_rounds`` times), scores and texts (read by
    :func:`hw_plates.task.read_boxes` with the run's margin and views). Without a detector
    the whole image is one plate."""
    h, w = image.shape[:2]
    if min(h, w) < 2:
        raise UserError(f"image of {w}x{h} pixels: crop of shape {image.shape} is empty or too small "
                        "(needs at least 2x2 pixels)")
    if detector is None:
        boxes, scores = np.array([[0, 0, w, h]], dtype=np.float32), np.ones(1)
        return boxes, scores, read_boxes(reader, image, boxes, 0.0, BOX_VIEW, beam_width)
    (found,) = detect_plates(detector, [image], config["size"], flip=config.get("flip", False), refiner=refiner,
                             rounds=config.get("refine_rounds", 0))
    keep = found["scores"] >= config["score_threshold"]
    boxes, scores = found["boxes"][keep].numpy(), found["scores"][keep].numpy()
    readable = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)  # at least 2x2 px
    boxes, scores = boxes[readable], scores[readable]
    return boxes, scores, read_boxes(reader, image, boxes, config["margin"], reading_views(config), beam_width)


class PlatePredictor(Predictor):
    """Plates found in an image (boxes), each labelled with the text the reader reads."""

    def __init__(self, run_dir: str | Path, reader: CRNN, detector=None, detector_config: dict | None = None,
                 beam_width: int = 1, refiner: BoxRefiner | None = None):
        super().__init__(run_dir, kind="detection", classes=["plate"], input_size=reader.input_size,
                         alphabet=reader.alphabet.chars, stages=["detect", "read"] if detector else ["read"])
        self.reader, self.detector, self.config, self.beam_width = reader, detector, detector_config, beam_width
        self.refiner = refiner

    def predict(self, image: Image.Image) -> dict:
        array = np.asarray(image.convert("RGB"))
        boxes, scores, texts = read_photo(array, self.reader, self.detector, self.config, self.beam_width,
                                          self.refiner)
        return detection_result(boxes, scores, texts, array.shape[1], array.shape[0])


def load_predictor(run_dir: str | Path) -> PlatePredictor:
    """The predictor of a ``hw_plates.train`` run (:func:`hw_plates.load_model`: CPU, eval mode).

    Raises:
        UserError: a run without a reader (``--stage detect``), or the errors of ``load_model``.
    """
    loaded = load_model(run_dir)
    reader = loaded.model.require("reader", "hw_plates.predict (reading plates)")
    return PlatePredictor(run_dir, reader, loaded.model.detector, loaded.extras["detection"],
                          refiner=loaded.model.refiner)


def main(argv: list[str] | None = None) -> None:
    predict_main("hw_plates", argv)


if __name__ == "__main__":
    run_command(main)
