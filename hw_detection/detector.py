"""A trained detector of either backend behind one interface: images in, boxes out.

:func:`load_detector` rebuilds a run's model from its ``args.json`` and weights (``model.pt``
for the native backend, read with ``weights_only=True``; mmdet's checkpoint for ``mmdet``),
and :meth:`Detector.predict` returns detections in each image's own pixels, so that every
backend goes through the same evaluation.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.data import DataError
from core.detection.centernet import CenterNet, predict

MODEL_FILE = "model.pt"


def to_tensor(array: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 array (H, W, 3) as a float image (3, size, size) in [0, 1]."""
    image = torch.from_numpy(np.array(array)).permute(2, 0, 1).float().div(255)
    return F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class Detector:
    """Detections of a native CenterNet in the original images' pixels."""

    backend = "torch"

    def __init__(self, model: CenterNet, size: int, class_names: Sequence[str], device="cpu"):
        self.model, self.size, self.class_names, self.device = model.to(device).eval(), size, tuple(class_names), device

    def predict(self, arrays: Sequence[np.ndarray], batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        results = []
        for start in range(0, len(arrays), batch_size):
            chunk = arrays[start:start + batch_size]
            images = torch.stack([to_tensor(a, self.size) for a in chunk])
            for array, det in zip(chunk, predict(self.model, images, device=self.device)):
                height, width = array.shape[:2]
                det["boxes"] = det["boxes"] * torch.tensor([width / self.size, height / self.size] * 2)
                results.append(det)
        return results


def read_run_args(run: str | Path) -> dict:
    path = Path(run) / "args.json"
    if not path.is_file():
        raise DataError(f"{run}: no args.json (is this a hw_detection.train run folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def load_detector(run: str | Path, device="cpu"):
    """The detector a ``hw_detection.train`` run saved (either backend)."""
    run = Path(run)
    args = read_run_args(run)
    class_names = tuple(args["classes"].split(","))
    if args.get("backend") == "mmdet":
        from .mmdet_backend import MMDetDetector

        return MMDetDetector.from_run(run, args, class_names, device)
    path = run / MODEL_FILE
    if not path.is_file():
        raise DataError(f"{path}: model weights not found (did the training run finish?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read model weights ({type(exc).__name__}: {exc})") from None
    model = CenterNet(len(class_names), dcn=args.get("dcn", False), skips=not args.get("no_skips", False))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit the model in args.json ({str(exc).splitlines()[0]})") from None
    return Detector(model, args["size"], class_names, device)
