"""Scoring a trained reader, the saved model file, and the figure of the worst readings."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from core.data import DataError
from core.plots import image_grid

from .data import CropSet, to_input
from .models import CRNN
from .task import read_crops
from .text import Alphabet, levenshtein, reading_metrics

MODEL_FILE = "model.pt"


def crop_metrics(reader: CRNN, crops: CropSet, beam_width: int = 1) -> tuple[dict, list[str]]:
    """``exact``, ``cer`` and ``mean_levenshtein`` of the reader on ``crops``, and its readings."""
    images = torch.stack([to_input(image) for image in crops.images])
    predictions = read_crops(reader, images, beam_width)
    scores = reading_metrics(predictions, crops.texts)
    return {"crops": len(crops), **{k: round(v, 4) for k, v in scores.items()}}, predictions


def worst_readings_figure(crops: CropSet, predictions: Sequence[str], path: str | os.PathLike, n: int = 16) -> Path:
    """The ``n`` crops read worst (most edits), titled ``truth -> reading``."""
    edits = [levenshtein(p, t) for p, t in zip(predictions, crops.texts)]
    order = sorted(range(len(edits)), key=lambda i: -edits[i])[:n]
    titles = [f"{crops.texts[i]} -> {predictions[i] or '(empty)'} ({edits[i]})" for i in order]
    return image_grid([crops.images[i] for i in order], path, titles=titles, ncols=4, cell_size=2.4,
                      title="worst readings: truth -> reading (edits)")


def save_model(path: str | os.PathLike, reader: CRNN | None = None, reader_config: dict | None = None,
               detector: torch.nn.Module | None = None, detector_config: dict | None = None) -> Path:
    """The trained weights and what rebuilds them, as tensors, strings and numbers only, so
    :func:`load_model` can read it with ``torch.load(weights_only=True)``."""
    content = {}
    if reader is not None:
        content["reader"] = {"config": reader_config, "state_dict": reader.state_dict()}
    if detector is not None:
        content["detector"] = {"config": detector_config, "state_dict": detector.state_dict()}
    path = Path(path)
    torch.save(content, path)
    return path


def load_reader(run: str | os.PathLike) -> CRNN:
    """The reader saved in a run folder's ``model.pt`` (its alphabet comes with the weights)."""
    entry = read_model_file(run).get("reader")
    if entry is None:
        raise DataError(f"{Path(run) / MODEL_FILE}: holds no reader (train with --stage read or both)")
    state, config = entry["state_dict"], entry["config"]
    model = CRNN(Alphabet.from_tensor(state["alphabet_codes"]), config["arch"], config["height"], config["channels"], config["hidden"])
    model.load_state_dict(state)
    model.input_size = (config["height"], config["width"])
    return model.eval()


def read_model_file(run: str | os.PathLike) -> dict:
    path = Path(run) / MODEL_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found (is {run} a hw_plates.train run folder?)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
