"""The hard-hat detector: CenterNet rebuilt from its config, the run's model file, and one
interface for inference with either backend.

A run's ``model.pt`` (:func:`core.runs.save_model`) holds, for both backends::

    config  {"backend": "torch" | "mmdet", "num_classes": C, "dcn": bool, "skips": bool}
    extras  {"classes": [names], "size": input side in px, "score_threshold": float,
             "flip": bool (native backend: detect with the test-time flip; absent in older files: no)}

and the state dict of the network: :class:`core.detection.centernet.CenterNet` for ``torch``,
MMDetection's ``CenterNet`` (:mod:`hw_detection.mmdet_backend`, which needs MMDetection) for
``mmdet``. :func:`load_model` rebuilds either; :func:`make_detector` wraps the network in a
detector whose ``predict(arrays)`` returns boxes in each image's own pixels, so both backends
go through the same evaluation and predictor.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import runs
from core.detection.centernet import CenterNet, predict

from .data import to_tensor

HOMEWORK = "hw_detection"
KIND = "detection"
BACKENDS = ("torch", "mmdet")


def model_config(backend: str, num_classes: int, dcn: bool = False, skips: bool = True) -> dict:
    """The ``config`` of a model file: what rebuilds the network (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return {"backend": backend, "num_classes": int(num_classes), "dcn": bool(dcn), "skips": bool(skips)}


def build_model(config: dict, weights: str | None = None) -> nn.Module:
    """The network ``config`` describes, freshly initialised (``weights="imagenet"``: the native
    backbone starts from torchvision's ImageNet weights).

    Raises:
        UserError: ``mmdet`` without MMDetection installed.
    """
    if config["backend"] == "mmdet":
        from .mmdet_backend import build_model as build_mmdet_model

        return build_mmdet_model(config["num_classes"], config["dcn"], skips=config["skips"])
    return CenterNet(config["num_classes"], weights=weights, dcn=config["dcn"], skips=config["skips"])


def save_detector(run: str | os.PathLike, model: nn.Module, config: dict, class_names: Sequence[str], size: int,
                  score_threshold: float, flip: bool = False) -> Path:
    """Write the run's ``model.pt``: ``model``'s weights with ``config`` and the extras."""
    return runs.save_model(run, homework=HOMEWORK, kind=KIND, config=config, state_dict=model.state_dict(),
                           extras={"classes": [str(c) for c in class_names], "size": int(size),
                                   "score_threshold": float(score_threshold), "flip": bool(flip)})


def load_model(run: str | os.PathLike) -> runs.LoadedModel:
    """The network a ``hw_detection.train`` run saved (either backend), in eval mode on the CPU;
    ``extras`` give its classes, input size and score threshold.

    Raises:
        UserError: no model file (see :func:`core.runs.read_model`), a file whose weights do not
            fit its config, or an ``mmdet`` run without MMDetection installed.
    """
    return runs.rebuild_model(run, HOMEWORK, lambda saved: build_model(saved.config))


class Detector:
    """Detections of a native CenterNet in the original images' pixels."""

    backend = "torch"

    def __init__(self, model: CenterNet, size: int, class_names: Sequence[str], device="cpu", flip: bool = False):
        self.model, self.size, self.class_names, self.device = model.to(device).eval(), size, tuple(class_names), device
        self.flip = flip

    def predict(self, arrays: Sequence[np.ndarray], batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        """``boxes`` (K, 4) in each RGB image's pixels, ``scores`` and ``labels`` (on the CPU)."""
        results = []
        for start in range(0, len(arrays), batch_size):
            chunk = arrays[start:start + batch_size]
            images = torch.stack([to_tensor(a, self.size) for a in chunk])
            for array, det in zip(chunk, predict(self.model, images, device=self.device, flip=self.flip)):
                height, width = array.shape[:2]
                scale = torch.tensor([width / self.size, height / self.size] * 2, dtype=det["boxes"].dtype)
                det["boxes"] = det["boxes"] * scale
                results.append(det)
        return results


def make_detector(backend: str, model: nn.Module, size: int, class_names: Sequence[str], device="cpu",
                  flip: bool = False):
    """The detector of ``backend`` around ``model``: :class:`Detector` (``flip``: with the
    test-time flip) or :class:`hw_detection.mmdet_backend.MMDetDetector`, both with
    ``predict(arrays)``."""
    if backend == "mmdet":
        from .mmdet_backend import MMDetDetector

        return MMDetDetector(model, size, class_names, device)
    return Detector(model, size, class_names, device, flip)


def loaded_detector(loaded: runs.LoadedModel, device="cpu"):
    """The detector of a model :func:`load_model` returned."""
    return make_detector(loaded.config["backend"], loaded.model, loaded.extras["size"], loaded.extras["classes"],
                         device, loaded.extras.get("flip", False))
