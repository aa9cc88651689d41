"""Read the licence plates in images with a trained run.

    python -m hw_plates.predict --run runs/hw_plates/<name> car1.jpg car2.jpg

A run with a detector finds the plates (scores at least the run's ``--score-threshold``), cuts
each with the run's ``--margin`` and reads it; a run with a reader only reads each image as one
plate crop. Prints the texts and writes
``predictions.json`` (per image: ``boxes``, each with its ``label`` = the plate's text, its
``score`` and ``box``) and each image with its plates drawn into ``<run>/predict-<timestamp>/``
(or ``--run-dir``). ``python -m core.serve --run RUN`` serves the same predictor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.cli import run_command
from core.predictor import Predictor, detection_result, predict_main

from .data import cut_plate, prepare_crop, to_input
from .detect import detect_plates
from .models import CRNN
from .report import load_detector, load_reader
from .task import read_crops


class PlatePredictor(Predictor):
    """Plates found in an image (boxes), each labelled with the text the reader reads."""

    def __init__(self, run_dir: str | Path, reader: CRNN, detector=None, detector_config: dict | None = None,
                 beam_width: int = 1):
        super().__init__(run_dir, kind="detection", classes=["plate"], input_size=reader.input_size,
                         alphabet=reader.alphabet.chars, stages=["detect", "read"] if detector else ["read"])
        self.reader, self.detector, self.config, self.beam_width = reader, detector, detector_config, beam_width

    def read(self, image: np.ndarray, boxes: np.ndarray) -> list[str]:
        """The reader's text for each box of an RGB image (H, W, 3)."""
        height, width = self.reader.input_size
        margin = self.config["margin"] if self.config else 0.0
        crops = [to_input(prepare_crop(cut_plate(image, box, margin), height, width)) for box in boxes]
        return read_crops(self.reader, torch.stack(crops), self.beam_width) if crops else []

    def predict(self, image: Image.Image) -> dict:
        array = np.asarray(image.convert("RGB"))
        h, w = array.shape[:2]
        if self.detector is None:
            boxes, scores = np.array([[0, 0, w, h]], dtype=np.float32), np.ones(1)
        else:
            (found,) = detect_plates(self.detector, [array], self.config["size"])
            keep = found["scores"] >= self.config["score_threshold"]
            boxes, scores = found["boxes"][keep].numpy(), found["scores"][keep].numpy()
            readable = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)  # at least 2x2 px
            boxes, scores = boxes[readable], scores[readable]
        return detection_result(boxes, scores, self.read(array, boxes), w, h)


def load_predictor(run_dir: str | Path) -> PlatePredictor:
    """The predictor of a ``hw_plates.train`` run (``model.pt``, read weights-only, CPU, eval mode)."""
    detector, config = load_detector(run_dir)
    return PlatePredictor(run_dir, load_reader(run_dir), detector, config)


def main(argv: list[str] | None = None) -> None:
    predict_main("hw_plates", argv)


if __name__ == "__main__":
    run_command(main)
