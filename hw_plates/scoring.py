"""Scoring a trained reader (on crops), detector (on photos) and both end to end, and the
figures of the worst readings."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.detection.evaluate import mean_average_precision
from core.plots import box_overlays, image_grid

from .data import BoxNoise, CropSet, Photo, PhotoCutDataset, cut_plate, to_input
from .detect import detect_plates, match_plates, refined
from .models import CRNN
from .refine import BoxRefiner
from .task import BOX_VIEW, read_boxes, read_crops
from .text import end_to_end_metrics, levenshtein, reading_metrics


def crop_metrics(reader: CRNN, crops: CropSet, beam_width: int = 1) -> tuple[dict, list[str]]:
    """``exact``, ``cer`` and ``mean_levenshtein`` of the reader on ``crops``, and its readings."""
    images = torch.stack([to_input(image) for image in crops.images])
    predictions = read_crops(reader, images, beam_width)
    scores = reading_metrics(predictions, crops.texts)
    return {"crops": len(crops), **{k: round(v, 4) for k, v in scores.items()}}, predictions


def cut_metrics(reader: CRNN, photos: Sequence[Photo], crops: CropSet, beam_width: int = 1,
                noise: BoxNoise = BoxNoise(), seed: int = 0, margin: float = 0.0) -> dict:
    """The reader on the same plates as clean crops and as cuts from ``photos``, side by side.

    ``photo_crops_exact``: the clean crops (``crops`` whose name is a photo's) of the photos'
    plates; ``cut_exact``: the plates cut from the photos at their true boxes (grown by
    ``margin``, as the pipeline cuts); ``noisy_cut_exact``:
    cut with a fixed draw of ``noise`` (``seed``), as a detector's boxes stray;
    ``cut_loss``: ``photo_crops_exact - noisy_cut_exact``.
    """
    if not photos:
        return {}
    height, width = reader.input_size
    exact = PhotoCutDataset(photos, height, width, noise=None, margin=margin)
    noisy = PhotoCutDataset(photos, height, width, noise=noise, seed=seed, margin=margin)
    scores = {"cut_plates": len(exact)}
    for name, dataset in (("cut", exact), ("noisy_cut", noisy)):
        images, texts = zip(*(dataset[i] for i in range(len(dataset))))
        scores[f"{name}_exact"] = reading_metrics(read_crops(reader, torch.stack(images), beam_width), texts)["exact"]
    names = {p.name for p in photos}
    clean = crops.subset(i for i, n in enumerate(crops.names) if n in names)
    if len(clean):
        scores["photo_crops_exact"] = crop_metrics(reader, clean, beam_width)[0]["exact"]
        scores["cut_loss"] = scores["photo_crops_exact"] - scores["noisy_cut_exact"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}


def worst_readings_figure(crops: CropSet, predictions: Sequence[str], path: str | os.PathLike, n: int = 16) -> Path:
    """The ``n`` crops read worst (most edits), titled ``truth -> reading``."""
    edits = [levenshtein(p, t) for p, t in zip(predictions, crops.texts)]
    order = sorted(range(len(edits)), key=lambda i: -edits[i])[:n]
    titles = [f"{crops.texts[i]} -> {predictions[i] or '(empty)'} ({edits[i]})" for i in order]
    return image_grid([crops.images[i] for i in order], path, titles=titles, ncols=4, cell_size=2.4,
                      title="worst readings: truth -> reading (edits)")


def detector_metrics(detector, photos: Sequence[Photo], size: int, flip: bool = False,
                     refiner: BoxRefiner | None = None, rounds: int = 2) -> dict:
    """``map50`` and ``map`` (COCO's, IoU 0.5:0.95) of the plate detector on ``photos``
    (``flip``: with the test-time flip); with a ``refiner``, of the boxes it refines (``rounds``
    times), and ``unrefined_map50`` / ``unrefined_map`` of the boxes as found."""
    images = [p.load() for p in photos]
    targets = [{"boxes": torch.as_tensor(p.boxes), "labels": torch.zeros(len(p.boxes), dtype=torch.long)}
               for p in photos]
    found = detect_plates(detector, images, size, flip=flip)
    if refiner is None or not rounds:
        scores = mean_average_precision(found, targets)
        return {"photos": len(photos), "map50": round(scores["map50"], 4), "map": round(scores["map"], 4)}
    scores = mean_average_precision(refined(found, images, refiner, rounds), targets)
    raw = mean_average_precision(found, targets)
    return {"photos": len(photos), "map50": round(scores["map50"], 4), "map": round(scores["map"], 4),
            "unrefined_map50": round(raw["map50"], 4), "unrefined_map": round(raw["map"], 4)}


def end_to_end(detector, reader: CRNN, photos: Sequence[Photo], size: int, margin: float,
               score_threshold: float = 0.3, beam_width: int = 1, flip: bool = False,
               views: Sequence[Sequence[float]] = BOX_VIEW, refiner: BoxRefiner | None = None,
               rounds: int = 2) -> tuple[dict, list[dict]]:
    """Detect (``flip``: with the test-time flip; ``refiner``: boxes refined ``rounds`` times,
    :func:`hw_plates.detect.detect_plates`), cut each matched plate with ``margin`` from
    the photo as loaded and read it (:func:`hw_plates.task.read_boxes`, in ``views``); the
    photo-level scores (:func:`hw_plates.text.end_to_end_metrics`), ``e2e_found`` /
    ``e2e_missed`` (true plates with / without a matching detection), ``e2e_misread`` (found
    but read wrong) and ``detector_cut_exact`` (the share of found plates read whole: the reader
    on the detector's cuts), and one row per true plate (photo, text, box, detection box and
    score, reading)."""
    images = [p.load() for p in photos]
    detections = detect_plates(detector, images, size, flip=flip, refiner=refiner, rounds=rounds)
    rows = []
    for photo, image, det in zip(photos, images, detections):
        first = len(rows)
        for box, text, index in zip(photo.boxes, photo.texts, match_plates(photo.boxes, det, score_threshold)):
            crop = cut_plate(image, det["boxes"][index].tolist(), margin) if index is not None else None
            found = crop is not None and min(crop.shape[:2]) >= 2
            rows.append({"photo": photo.name, "text": text, "image": image,
                         "reading": "", "box": [round(float(v), 1) for v in box],
                         "det_box": [round(float(v), 1) for v in det["boxes"][index].tolist()] if found else None,
                         "score": round(float(det["scores"][index]), 4) if found else None})
        mine = [row for row in rows[first:] if row["det_box"] is not None]
        readings = read_boxes(reader, image, [row["det_box"] for row in mine], margin, views, beam_width)
        for row, reading in zip(mine, readings):
            row["reading"] = reading
    by_photo: dict[str, tuple[list, list]] = {}
    for row in rows:
        truths, reads = by_photo.setdefault(row["photo"], ([], []))
        truths.append(row["text"])
        reads.append(row["reading"])
    scores = end_to_end_metrics([t for t, _ in by_photo.values()], [r for _, r in by_photo.values()])
    found = [row for row in rows if row["det_box"] is not None]
    scores["e2e_found"] = len(found)
    scores["e2e_missed"] = len(rows) - len(found)
    scores["e2e_misread"] = sum(row["reading"] != row["text"] for row in found)
    if found:
        scores["detector_cut_exact"] = 1 - scores["e2e_misread"] / len(found)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()}, rows


def worst_photos_figure(rows: Sequence[dict], path: str | os.PathLike, n: int = 9) -> Path:
    """The ``n`` photos read worst end to end (most edits over their plates): each photo with
    its true boxes (dashed) and the detections read for them (solid, with the score), titled
    ``truth -> reading`` per plate (``(no box)`` for a plate not found)."""
    photos: dict[str, list[dict]] = {}
    for row in rows:
        photos.setdefault(row["photo"], []).append(row)
    edits = {name: sum(levenshtein(r["reading"], r["text"]) for r in plates) for name, plates in photos.items()}
    order = sorted(photos, key=lambda name: -edits[name])[:n]
    images, truths, preds, titles = [], [], [], []
    for name in order:
        plates = photos[name]
        found = [r for r in plates if r["det_box"] is not None]
        images.append(plates[0]["image"])
        truths.append({"boxes": np.asarray([r["box"] for r in plates]).reshape(-1, 4),
                       "labels": np.zeros(len(plates), dtype=np.int64)})
        preds.append({"boxes": np.asarray([r["det_box"] for r in found], dtype=np.float32).reshape(-1, 4),
                      "scores": np.asarray([r["score"] for r in found], dtype=np.float32),
                      "labels": np.zeros(len(found), dtype=np.int64)})
        titles.append("; ".join(f"{r['text']} -> {r['reading'] or ('(no box)' if r['det_box'] is None else '(empty)')}"
                                for r in plates) + f"\n{name}")
    return box_overlays(images, truths, preds, path, ["plate"], titles=titles, score_threshold=0.0)
