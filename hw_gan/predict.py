"""Faces from a trained GAN through the shared predictor interface (:mod:`core.predictor`).

    python -m hw_gan.predict --run runs/hw_gan/<name> --seed 3 --count 16

``python -m core.serve --run RUN`` serves the same predictor.
"""
from __future__ import annotations

from pathlib import Path

from core.cli import run_command
from core.predictor import Predictor, generation_result, predict_main

from .data import to_unit
from .models import generate, load_model


class GANPredictor(Predictor):
    """A hw_gan generator: a grid of ``count`` faces drawn from ``seed``."""

    def __init__(self, run_dir: str | Path):
        loaded = load_model(run_dir)
        self.generator = loaded.model
        size = loaded.config["image_size"]
        super().__init__(run_dir, kind="generation", input_size=(size, size), latent=loaded.config["latent"])

    def generate(self, seed: int = 0, count: int = 16) -> dict:
        return generation_result(to_unit(generate(self.generator, count, seed)).clamp(0, 1), seed)


def load_predictor(run_dir: str | Path) -> GANPredictor:
    """The predictor of a ``hw_gan.train`` run: its generator from :func:`hw_gan.load_model`
    (CPU, eval mode)."""
    return GANPredictor(run_dir)


def main(argv: list[str] | None = None) -> None:
    predict_main("hw_gan", argv, generator=True)


if __name__ == "__main__":
    run_command(main)
