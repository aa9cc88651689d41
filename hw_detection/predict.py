"""Find heads with and without hard hats in image files with a trained run (either backend).

    python -m hw_detection.predict --run runs/hw_detection/<name> site.jpg [more.png ...] [--out DIR]

Prints the boxes of each image and writes ``detections.json`` (per image path: ``boxes``, each
``[x_min, y_min, x_max, y_max]`` in the image's pixels with its class and score) and the images
with their boxes drawn into ``DIR`` (default ``<run>/predict-<timestamp>/``). Boxes scoring below
the run's ``--score-threshold`` are left out. ``python -m core.serve --run RUN`` serves the same
predictor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from core.cli import run_command
from core.predictor import Predictor, detection_result, predict_main

from .models import load_model, loaded_detector

RESULTS_FILE = "detections.json"


class DetectionPredictor(Predictor):
    """A hw_detection run: boxes with class names and scores, in the image's pixels."""

    def __init__(self, run_dir: str | Path, detector, backend: str, score_threshold: float):
        size = detector.size
        super().__init__(run_dir, kind="detection", classes=list(detector.class_names), input_size=(size, size),
                         model="centernet", backend=backend)
        self.detector, self.score_threshold = detector, score_threshold

    def predict(self, image: Image.Image) -> dict:
        array = np.asarray(image.convert("RGB"))
        found = self.detector.predict([array])[0]
        keep = found["scores"] >= self.score_threshold
        labels = [self.detector.class_names[int(i)] for i in found["labels"][keep]]
        return detection_result(found["boxes"][keep].numpy(), found["scores"][keep].numpy(), labels,
                                width=array.shape[1], height=array.shape[0])


def load_predictor(run_dir: str | Path) -> DetectionPredictor:
    """The predictor of a ``hw_detection.train`` run (:func:`hw_detection.load_model`: CPU, eval mode)."""
    loaded = load_model(run_dir)
    return DetectionPredictor(run_dir, loaded_detector(loaded), loaded.config["backend"],
                              loaded.extras["score_threshold"])


def main(argv: list[str] | None = None) -> None:
    predict_main("hw_detection", argv, results_file=RESULTS_FILE)


if __name__ == "__main__":
    run_command(main)
