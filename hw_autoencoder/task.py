"""The tasks :class:`core.trainer.Trainer` fits: an autoencoder (optionally denoising) and a
(conditional) VAE whose loss terms are logged apart."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.trainer import Task

from .data import add_noise
from .models import VAE, KL_divergence, elbo_terms, log_likelihood


class AutoencoderTask(Task):
    """Reconstruction MSE per pixel; with ``noise > 0`` the input is ``x + noise * N(0, 1)`` and
    the target the clean ``x`` (the course's denoising bonus). Adam with a cosine schedule over
    ``total_steps`` optimiser steps."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, noise: float = 0.0, total_steps: int | None = None):
        super().__init__()
        self.model, self.lr, self.noise, self.total_steps = model, lr, noise, total_steps

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return add_noise(images, self.noise) if self.noise else images

    def training_step(self, batch):
        images = batch[0]
        reconstruction, _ = self.model(self.inputs(images))
        return F.mse_loss(reconstruction, images)

    def validation_step(self, batch) -> dict:
        images = batch[0]
        reconstruction, _ = self.model(self.inputs(images))
        return {"loss": F.mse_loss(reconstruction.float(), images, reduction="none").flatten(1).mean(1)}

    def configure_optimizers(self):
        return _adam_cosine(self.model, self.lr, self.total_steps)


class VAETask(Task):
    """Minimises the negative ELBO ``rec + beta * kl`` per image (nats), ``rec = -log p(x|z)``;
    ``beta`` rises linearly from 0 to 1 over the first ``warmup_steps`` optimiser steps (KL
    annealing, Bowman et al. 2016), then stays 1. Validation reports the full bound (beta 1)."""

    def __init__(self, model: VAE, lr: float = 1e-3, warmup_steps: int = 0, total_steps: int | None = None):
        super().__init__()
        self.model, self.lr, self.warmup_steps, self.total_steps = model, lr, warmup_steps, total_steps

    @property
    def beta(self) -> float:
        step = self._trainer.global_step if self._trainer is not None else 0
        return min(1.0, step / self.warmup_steps) if self.warmup_steps else 1.0

    def _terms(self, batch) -> dict[str, torch.Tensor]:
        images, labels = batch[0], batch[1]
        return elbo_terms(self.model, images, labels if self.model.conditional else None)

    def training_step(self, batch):
        images, labels = batch[0], batch[1]
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
        return _adam_cosine(self.model, self.lr, self.total_steps)


def _adam_cosine(model: nn.Module, lr: float, total_steps: int | None):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if not total_steps:
        return optimizer
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=lr * 0.02)
    return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}
