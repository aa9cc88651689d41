"""Scoring a trained reader (on crops), detector (on photos) and both end to end, and the
figures of the worst readings."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.detection.evaluate import mean_average_precision
from core.plots import image_grid

from .data import CropSet, Photo, cut_plate, prepare_crop, to_input
from .detect import detect_plates, match_plates
from .models import CRNN
from .task import read_crops
from .text import end_to_end_metrics, levenshtein, reading_metrics


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


def detector_metrics(detector, photos: Sequence[Photo], size: int) -> dict:
    """``map50`` and ``map`` (COCO's, IoU 0.5:0.95) of the plate detector on ``photos``."""
    detections = detect_plates(detector, [p.load() for p in photos], size)
    targets = [{"boxes": torch.as_tensor(p.boxes), "labels": torch.zeros(len(p.boxes), dtype=torch.long)}
               for p in photos]
    scores = mean_average_precision(detections, targets)
    return {"photos": len(photos), "map50": round(scores["map50"], 4), "map": round(scores["map"], 4)}


def end_to_end(detector, reader: CRNN, photos: Sequence[Photo], size: int, margin: float,
               score_threshold: float = 0.3, beam_width: int = 1) -> tuple[dict, list[dict]]:
    """Detect, cut each matched plate with ``margin``, read it; the photo-level scores
    (:func:`hw_plates.text.end_to_end_metrics`) and one row per true plate for the figure."""
    images = [p.load() for p in photos]
    detections = detect_plates(detector, images, size)
    height, width = reader.input_size
    rows, crops = [], []
    for photo, image, det in zip(photos, images, detections):
        for box, text, index in zip(photo.boxes, photo.texts, match_plates(photo.boxes, det, score_threshold)):
            crop = cut_plate(image, det["boxes"][index].tolist(), margin) if index is not None else None
            if crop is not None and min(crop.shape[:2]) < 2:
                crop = None
            rows.append({"photo": photo.name, "text": text, "crop": crop, "reading": ""})
            if crop is not None:
                crops.append((len(rows) - 1, to_input(prepare_crop(crop, height, width))))
    if crops:
        readings = read_crops(reader, torch.stack([c for _, c in crops]), beam_width)
        for (row, _), reading in zip(crops, readings):
            rows[row]["reading"] = reading
    by_photo: dict[str, tuple[list, list]] = {}
    for row in rows:
        truths, reads = by_photo.setdefault(row["photo"], ([], []))
        truths.append(row["text"])
        reads.append(row["reading"])
    scores = end_to_end_metrics([t for t, _ in by_photo.values()], [r for _, r in by_photo.values()])
    scores["e2e_missed"] = sum(row["crop"] is None for row in rows)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}, rows


def worst_photos_figure(rows: Sequence[dict], path: str | os.PathLike, n: int = 16) -> Path:
    """The plates read worst end to end: the detector's cut, titled ``truth -> reading``."""
    edits = [levenshtein(r["reading"], r["text"]) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -edits[i])[:n]
    blank = np.full((16, 64, 3), 255, dtype=np.uint8)
    images = [rows[i]["crop"] if rows[i]["crop"] is not None else blank for i in order]
    titles = [f"{rows[i]['text']} -> {rows[i]['reading'] or ('(no box)' if rows[i]['crop'] is None else '(empty)')}"
              for i in order]
    return image_grid(images, path, titles=titles, ncols=4, cell_size=2.4,
                      title="worst photos end to end: truth -> reading of the detector's cut")
