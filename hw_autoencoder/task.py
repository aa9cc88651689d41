"""The tasks :class:`core.trainer.Trainer` fits: an autoencoder (optionally denoising) and a
(conditional) VAE whose loss terms are logged apart."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import unwrap
from core.trainer import Task

from .data import add_noise, jitter_faces, random_shifts
from .models import VAE, KL_divergence, elbo_terms, log_likelihood


class AutoencoderTask(Task):
    """Reconstruction MSE per pixel; with ``noise > 0`` the input is ``x + noise * N(0, 1)`` and
    the target the clean ``x`` (the course's denoising bonus). With ``jitter`` (keyword
    arguments of :func:`hw_autoencoder.data.jitter_faces`) each training batch is first moved,
    scaled, turned and brightened a little, image by image: more faces for a model that would
    otherwise learn the 1008 training photos by heart. Adam with a cosine schedule over the
    run's optimiser steps."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, noise: float = 0.0, jitter: dict | None = None):
        super().__init__()
        self.model, self.lr, self.noise, self.jitter = model, lr, noise, jitter

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return add_noise(images, self.noise) if self.noise else images

    def training_step(self, batch):
        images = jitter_faces(batch[0], **self.jitter) if self.jitter else batch[0]
        reconstruction, _ = self.model(self.inputs(images))
        return F.mse_loss(reconstruction, images)

    def validation_step(self, batch) -> dict:
        images = batch[0]       # scored with the encoder's codes: fit_code's steps are for after training
        model = unwrap(self.model)                  # under torchrun the Trainer wraps it in DDP
        reconstruction = model.decode(model.encode(self.inputs(images), steps=0))
        return {"loss": F.mse_loss(reconstruction.float(), images, reduction="none").flatten(1).mean(1)}

    def configure_optimizers(self):
        return _adam_cosine(self.model, self.lr, self.trainer.estimated_stepping_batches)


class VAETask(Task):
    """Minimises the negative ELBO ``rec + beta * kl`` per image (nats), ``rec = -log p(x|z)``;
    ``beta`` rises linearly from 0 to 1 over the first ``warmup`` share of the run's optimiser
    steps (KL annealing, Bowman et al. 2016), then stays 1. With ``shift > 0`` each training
    image is first moved by up to ``shift`` pixels (augmentation: a few thousand digits are
    otherwise overfitted). Validation reports the full bound."""

    def __init__(self, model: VAE, lr: float = 1e-3, warmup: float = 0.0, shift: int = 0):
        super().__init__()
        self.model, self.lr, self.warmup, self.shift = model, lr, warmup, shift

    @property
    def beta(self) -> float:
        if not self.warmup or self._trainer is None:
            return 1.0
        return min(1.0, self.global_step / (self.warmup * self.trainer.estimated_stepping_batches))

    def _terms(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch[0], batch[1]
        return elbo_terms(self.model, images, labels if self.model.conditional else None)

    def training_step(self, batch):
        images, labels = batch[0], batch[1]
        if self.shift:
            images = random_shifts(images, self.shift)
        if self.model.conditional:
            mu, logsigma, reconstruction = self.model(images, labels)
        else:
            mu, logsigma, reconstruction = self.model(images)
        kl, rec = KL_divergence(mu, logsigma), -log_likelihood(images, reconstruction)
        return {"loss": rec + self.beta * kl, "nelbo": rec + kl, "rec": rec, "kl": kl}

    def validation_step(self, batch) -> dict:
        terms = self._terms(batch)
        return {"loss": terms["nelbo"], **terms}

    def configure_optimizers(self):
        return _adam_cosine(self.model, self.lr, self.trainer.estimated_stepping_batches)


def _adam_cosine(model: nn.Module, lr: float, total_steps: int):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=lr * 0.02)
    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}
