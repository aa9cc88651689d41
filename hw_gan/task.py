"""The GAN as a :class:`core.trainer.Task` with its own update order, and its losses.

Each batch, as in the course's ``fit``: one discriminator step (real -> 1, fake -> 0) on a
fresh batch of fakes, then one generator step (its fakes -> 1). The Trainer runs everything
else: devices, AMP, checkpoints of both optimisers, resume, DDP.

During the generator's step the discriminator's weights do not require gradients, so the
generator's loss gives the discriminator no gradient at all: nothing can leak into the
discriminator's next step, and the backward pass skips the work.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from core.checkpoint import unwrap
from core.trainer import Task

from .augment import diff_augment

LOSSES = ("bce", "saturating", "hinge")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str = "bce",
                       real_target: float = 1.0) -> torch.Tensor:
    """The discriminator's loss on logits of real and generated images.

    ``bce`` and ``saturating``: the course's ``BCELoss`` with real -> ``real_target`` (1, or
    0.9 with one-sided label smoothing, Salimans et al. 2016) and fake -> 0, summed.
    ``hinge``: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))`` (Lim & Ye 2017).
    """
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_target))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, loss: str = "bce") -> torch.Tensor:
    """The generator's loss on the discriminator's logits of its images.

    ``bce``: the course's ``BCELoss(D(G(z)), 1) = -log D(G(z))``, the *non-saturating* loss of
    Goodfellow et al. 2014, whose gradient stays large while D rejects the fakes.
    ``saturating``: the original minimax ``log(1 - D(G(z)))``, which vanishes then.
    ``hinge``: ``-mean(D(G(z)))``.
    """
    if loss == "hinge":
        return -fake_logits.mean()
    if loss == "saturating":
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def r1_penalty(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``E ||d logits / d images||^2``: the mean over images of the squared gradient norm of each
    image's logit, kept in the graph (``create_graph``) so that it can be minimised."""
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1).mean()


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Parameters of ``module`` do not require gradients inside the block."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


class GANTask(Task):
    """Alternating discriminator and generator steps (``automatic_optimization = False``).

    Args:
        generator, discriminator: the two networks.
        lr, betas: Adam's, for both (the course: 1e-4, (0.5, 0.999)).
        loss: ``bce`` (the course's), ``saturating`` or ``hinge``.
        label_smoothing: real target ``1 - label_smoothing`` in the discriminator's BCE.
        instance_noise: std of Gaussian noise added to the discriminator's inputs (real and
            fake), annealed linearly to 0 over the Trainer's epochs (Sønderby et al. 2017).
        augment: DiffAugment operations (:mod:`hw_gan.augment`) applied to every image the
            discriminator sees, in both steps; ``()`` for none.
        r1: weight ``gamma`` of the R1 penalty ``gamma / 2 * E ||grad_x D(x)||^2`` on real images
            (Mescheder et al. 2018); 0 for none. It is computed every ``r1_every`` discriminator
            steps and weighted by ``r1_every`` then (lazy regularisation, Karras et al. 2020).
        n_fixed: size of the fixed noise batch the per-epoch sample grids are drawn from.
    """

    automatic_optimization = False

    def __init__(self, generator: nn.Module, discriminator: nn.Module, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.5, 0.999), loss: str = "bce", label_smoothing: float = 0.0,
                 instance_noise: float = 0.0, augment: tuple[str, ...] = (), r1: float = 0.0, r1_every: int = 4,
                 n_fixed: int = 64, seed: int = 0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"--loss {loss}: expected one of {', '.join(LOSSES)}")
        self.generator, self.discriminator = generator, discriminator
        self.lr, self.betas, self.loss = lr, tuple(betas), loss
        self.label_smoothing, self.instance_noise = label_smoothing, instance_noise
        self.augment, self.r1, self.r1_every = tuple(augment), r1, r1_every
        self._d_steps = 0
        self.latent = unwrap(generator).latent
        fixed = torch.randn(n_fixed, self.latent, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("fixed_noise", fixed)

    def configure_optimizers(self):
        return [torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=self.betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=self.betas)]

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent, device=self.fixed_noise.device)

    def noisy(self, images: torch.Tensor) -> torch.Tensor:
        """Instance noise: ``images + sigma * N(0, 1)``, sigma falling linearly to 0 over training."""
        total = self.trainer.max_epochs if self._trainer is not None else 1
        sigma = self.instance_noise * max(0.0, 1.0 - self.current_epoch / total)
        return images + sigma * torch.randn_like(images) if sigma > 0 else images

    def seen(self, images: torch.Tensor) -> torch.Tensor:
        """What the discriminator is shown of ``images``: instance noise, then DiffAugment."""
        return diff_augment(self.noisy(images), self.augment)

    def discriminator_step_loss(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The discriminator's loss on ``real`` and (detached) ``fake`` images (plus the R1
        penalty on this step's real images when it is due), and the mean real and fake
        scores (probabilities) the course plots."""
        self._d_steps += 1
        penalise = self.r1 > 0 and self._d_steps % self.r1_every == 0
        real_seen = self.seen(real).detach().requires_grad_(penalise)
        real_logits = self.discriminator(real_seen)
        fake_logits = self.discriminator(self.seen(fake.detach()))
        loss = discriminator_loss(real_logits.float(), fake_logits.float(), self.loss, 1.0 - self.label_smoothing)
        scores = {"real_score": torch.sigmoid(real_logits.detach().float()).mean(),
                  "fake_score": torch.sigmoid(fake_logits.detach().float()).mean()}
        if penalise:
            penalty = r1_penalty(real_logits, real_seen)
            loss = loss + 0.5 * self.r1 * self.r1_every * penalty
        return loss, scores

    def generator_step_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's loss on its ``fake`` images through a frozen discriminator (unwrapped
        under DDP: no gradient of its weights is computed or synchronised here)."""
        with frozen(unwrap(self.discriminator)) as discriminator:
            return generator_loss(discriminator(self.seen(fake)).float(), self.loss)

    def training_step(self, batch):
        """One discriminator step, then one generator step on the same fakes (as in
        pytorch/examples' dcgan: one generator forward pass per batch, not two)."""
        real = batch[0] if isinstance(batch, (tuple, list)) else batch
        opt_d, opt_g = self.optimizers()
        fake = self.generator(self.noise(len(real)))
        loss_d, scores = self.discriminator_step_loss(real, fake)
        self.manual_step(opt_d, loss_d)
        loss_g = self.generator_step_loss(fake)
        self.manual_step(opt_g, loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **scores}

    @torch.no_grad()
    def sample(self, n: int | None = None, noise: torch.Tensor | None = None,
               generator: nn.Module | None = None) -> torch.Tensor:
        """Generated images in [-1, 1] from ``noise`` (default: the fixed batch, or ``n`` fresh
        draws) by ``generator`` (default: the task's) in eval mode (BatchNorm's running statistics)."""
        generator = generator if generator is not None else unwrap(self.generator)
        was_training = generator.training
        generator.eval()
        if noise is None:
            noise = self.fixed_noise if n is None else self.noise(n)
        images = generator(noise.to(self.fixed_noise.device)).float()
        generator.train(was_training)
        return images
