"""Samples of a trained run as one grid, through the interface the web service shares.

    python -m hw_autoencoder.predict --run runs/hw_autoencoder/<name> --seed 3 --count 16

A VAE draws its codes from the prior N(0, I), an AE from the Gaussian of its training codes,
a CVAE cycles through the digits. Writes ``predictions.json`` and the grid into
``<run>/predict-<timestamp>/``; ``python -m core.serve --run RUN`` serves the same predictor
(see :mod:`core.predictor`).
"""
from __future__ import annotations

from pathlib import Path

from core.cli import run_command
from core.predictor import Predictor, generation_result, predict_main

from .latent import sample_images
from .models import load_model


class SamplePredictor(Predictor):
    """A hw_autoencoder model as a generator."""

    def __init__(self, run_dir: str | Path):
        loaded = load_model(run_dir)
        model, config = loaded.model, loaded.config
        classes = [str(d) for d in range(model.classes)] if getattr(model, "conditional", False) else []
        super().__init__(run_dir, kind="generation", classes=classes, input_size=config["shape"][1:],
                         model=config["model"], latent=config["latent"])
        self.model = model

    def generate(self, seed: int = 0, count: int = 16) -> dict:
        nrow = 10 if getattr(self.model, "conditional", False) else None
        return generation_result(sample_images(self.model, count, seed), seed, nrow)


def load_predictor(run_dir: str | Path) -> SamplePredictor:
    """The predictor of a ``hw_autoencoder.train`` run: its model from
    :func:`hw_autoencoder.load_model` (CPU, eval mode)."""
    return SamplePredictor(run_dir)


def main(argv: list[str] | None = None) -> None:
    predict_main("hw_autoencoder", argv, generator=True)


if __name__ == "__main__":
    run_command(main)
