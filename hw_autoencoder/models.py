"""The homework's models and the VAE's loss.

- :class:`Autoencoder`: ``forward(x) -> (reconstruction, code)`` (Part 1; also the denoising AE).
- :class:`VAE`: ``encode(x) -> (mu, logsigma)``, ``gaussian_sampler`` (a reparametrised sample
  in train mode, ``mu`` in eval mode), ``decode(z)``, ``forward(x) -> (mu, logsigma,
  reconstruction)`` (Part 2.1).
- :class:`CVAE`: the same with the one-hot class joined to the encoder's input (as constant
  image planes) and to the decoder's input (Part 2.3).

All are convolutional and built for an image shape: 28x28 digits go down to 7x7, 64x64 faces
to 4x4 (stride-2 4x4 convolutions; the decoder mirrors them with transposed convolutions).

A trained run's model is read back by :func:`load_model` from its ``model.pt`` (kind
``"autoencoder"``; ``config``: :data:`CONFIG_KEYS`, ``model`` one of :data:`MODEL_NAMES`;
``extras``: ``dataset`` (faces or digits) and ``noise`` (the denoising AE's input noise, else 0)).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from core.runs import LoadedModel, rebuild_model

HOMEWORK = "hw_autoencoder"
KIND = "autoencoder"
MODEL_NAMES = ("ae", "vae", "cvae", "denoise")
CONFIG_KEYS = ("model", "shape", "latent", "width", "linear", "refine", "blocks", "code_steps", "code_lr")


def _downsamplings(size: int) -> int:
    """Halvings of ``size`` while it stays even and above 4 (64 -> 4: four, 28 -> 7: two)."""
    n = 0
    while size % 2 == 0 and size > 4:
        size //= 2
        n += 1
    return n


class ConvEncoder(nn.Module):
    """Image (C, H, W) -> ``out_features`` numbers: stride-2 convolutions with batch norm,
    then a hidden fully connected layer."""

    def __init__(self, shape: tuple[int, int, int], out_features: int, width: int = 32, hidden: int = 512):
        super().__init__()
        channels, size, _ = shape
        layers = []
        for i in range(_downsamplings(size)):
            out = min(width * 2 ** i, 256)
            layers += [nn.Conv2d(channels, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            channels, size = out, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, hidden), nn.LeakyReLU(0.2),
                                  nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """``in_features`` numbers -> image logits (C, H, W), mirroring :class:`ConvEncoder`. With
    ``cond > 0`` a condition vector (the CVAE's one-hot class) is joined as constant planes to
    the input of every transposed convolution too."""

    def __init__(self, in_features: int, shape: tuple[int, int, int], width: int = 32, hidden: int = 512,
                 cond: int = 0):
        super().__init__()
        channels, size, _ = shape
        n = _downsamplings(size)
        widths = [min(width * 2 ** i, 256) for i in range(n)]
        self.cond = cond
        self.start = (widths[-1], size // 2 ** n, size // 2 ** n)
        self.head = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                  nn.Linear(hidden, widths[-1] * self.start[1] * self.start[2]), nn.ReLU())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(widths[i] + cond, widths[i - 1], 4, 2, 1, bias=False),
                          nn.BatchNorm2d(widths[i - 1]), nn.ReLU()) for i in reversed(range(1, n)))
        self.blocks.append(nn.ConvTranspose2d(widths[0] + cond, channels, 4, 2, 1))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.head(z).view(-1, *self.start)
        for block in self.blocks:
            if self.cond:
                x = torch.cat([x, cond[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
            x = block(x)
        return x


class ResidualBlock(nn.Module):
    """``x + conv(relu(bn(conv(relu(bn(x))))))`` with 3x3 convolutions (He et al. 2016's
    pre-activation block): more decoder depth at one resolution, starting close to identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ResidualDecoder(ConvDecoder):
    """:class:`ConvDecoder` with ``blocks`` :class:`ResidualBlock` s before each transposed
    convolution (at 7x7 and 14x14 for digits): the VAE's deeper decoder."""

    def __init__(self, in_features: int, shape: tuple[int, int, int], width: int = 32, hidden: int = 512,
                 cond: int = 0, blocks: int = 1):
        super().__init__(in_features, shape, width, hidden, cond)
        n = _downsamplings(shape[1])
        widths = [min(width * 2 ** i, 256) for i in range(n)]
        self.residual = nn.ModuleList(nn.Sequential(*(ResidualBlock(widths[i]) for _ in range(blocks)))
                                      for i in reversed(range(n)))

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.head(z).view(-1, *self.start)
        for residual, block in zip(self.residual, self.blocks):
            x = residual(x)
            if self.cond:
                x = torch.cat([x, cond[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
            x = block(x)
        return x


class Refiner(nn.Module):
    """A small full-resolution convolutional net whose output is added to an image: local,
    shared weights learn sharpening from every patch of every image; starts at zero."""

    def __init__(self, channels: int, width: int, layers: int = 4):
        super().__init__()
        blocks, c = [], channels
        for _ in range(layers - 1):
            blocks += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
            c = width
        blocks.append(nn.Conv2d(c, channels, 3, padding=1))
        nn.init.zeros_(blocks[-1].weight)
        nn.init.zeros_(blocks[-1].bias)
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Autoencoder(nn.Module):
    """Part 1's autoencoder: ``forward(x) -> (reconstruction in [0, 1], code)``.

    With ``linear=True`` the code and the reconstruction each have a linear part fixed to
    PCA's (:meth:`init_pca`: ``z = V^T (x - mean) + f(x)``, ``x' = mean + V z + g(z)``) and
    the convolutional encoder ``f`` and decoder ``g`` learn what PCA misses. Their last layers
    start at zero, so training starts from PCA's reconstructions with as many components
    (Eckart-Young: the best linear code of that size) and can only add to them.
    """

    def __init__(self, shape: tuple[int, int, int] = (3, 64, 64), latent: int = 64, width: int = 32,
                 linear: bool = False, refine: int = 0, code_steps: int = 0, code_lr: float = 0.05):
        super().__init__()
        self.shape, self.latent, self.linear = tuple(shape), latent, linear
        self.code_steps, self.code_lr = code_steps, code_lr
        self.encoder = ConvEncoder(shape, latent, width)
        self.decoder = ConvDecoder(latent, shape, width)
        self.refiner = Refiner(shape[0], refine) if refine else None
        # the Gaussian of the training codes, for sampling (set by hw_autoencoder.latent.fit_code_gaussian)
        self.register_buffer("code_mean", torch.zeros(latent))
        self.register_buffer("code_std", torch.ones(latent))
        if linear:
            pixels = shape[0] * shape[1] * shape[2]
            self.register_buffer("mean", torch.zeros(pixels))
            self.register_buffer("components", torch.zeros(latent, pixels))
            for layer in (self.encoder.head[-1], self.decoder.blocks[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def init_pca(self, images: torch.Tensor, noise: float = 0.0, mirror: bool = False) -> None:
        """Set the linear parts to the PCA of ``images`` (N, C, H, W): the mean image and the
        top ``latent`` right singular vectors of the centred images (rows beyond the images'
        rank stay zero). With ``mirror`` the images' left-right mirror images join them, so a
        model trained on randomly flipped images starts at the PCA of the images it is trained
        on. With ``noise`` (the std of Gaussian noise on the inputs, a denoising AE) component
        ``i`` of variance ``l_i`` is scaled by ``sqrt(l_i / (l_i + noise^2))``, so that encoding
        and decoding shrink it by ``l_i / (l_i + noise^2)``: the linear part starts as the
        Wiener (linear MMSE) denoiser restricted to the top components instead of PCA's plain
        projection."""
        if mirror:
            images = torch.cat([images, images.flip(-1)])
        x = images.flatten(1).float().to(self.mean.device)
        mean = x.mean(0)
        _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.latent, vh.shape[0])
        variance = singular[:k] ** 2 / max(len(x) - 1, 1)
        self.mean.copy_(mean)
        self.components.zero_()
        self.components[:k] = vh[:k] * torch.sqrt(variance / (variance + noise ** 2))[:, None]

    def encode(self, x: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """The code of ``x``: the encoder's, then in eval mode ``steps`` (default
        ``code_steps``) steps of :meth:`fit_code`. Training always uses the encoder's code."""
        code = self.encoder(x)
        if self.linear:
            with torch.autocast(x.device.type, enabled=False):   # PCA's part in fp32 under mixed precision
                code = code.float() + (x.float().flatten(1) - self.mean) @ self.components.T
        steps = self.code_steps if steps is None else steps
        if steps and not self.training:
            code = self.fit_code(x, code, steps)
        return code

    def fit_code(self, x: torch.Tensor, code: torch.Tensor, steps: int) -> torch.Tensor:
        """``code`` (N, latent) improved by ``steps`` Adam steps (step size ``code_lr``) on the
        summed squared error of its reconstruction against ``x``, the decoder fixed: the
        encoder's code is a first guess (the amortisation gap, Cremer et al. 2018; a
        semi-amortised encoder, Kim et al. 2018), PCA's projection is the exact best code for
        its decoder. Adam works coordinate by coordinate and the loss is a sum over images, so
        each image's code moves as if alone (the result does not depend on the batch). The
        model's weights and their gradients are left untouched; the result is detached, fp32."""
        target = x.detach().float()
        with torch.enable_grad():
            code = code.detach().float().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([code], lr=self.code_lr)
            for _ in range(steps):
                loss = (self.decode(code).float() - target).pow(2).sum()
                (code.grad,) = torch.autograd.grad(loss, code)
                optimizer.step()
        return code.detach()

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        out = self.decoder(code)
        if not self.linear:
            return torch.sigmoid(out)
        with torch.autocast(code.device.type, enabled=False):    # as in encode
            out = out.float() + (self.mean + code.float() @ self.components).view(-1, *self.shape)
        if self.refiner is not None:
            out = out + self.refiner(out).float()
        return out if self.training else out.clamp(0, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.encode(x)
        return self.decode(code), code


class VAE(nn.Module):
    """Part 2.1's variational autoencoder (Kingma & Welling, 2014) with a Bernoulli decoder:
    ``decode`` returns pixel probabilities, the reconstruction."""

    conditional = False

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), latent: int = 20, width: int = 32,
                 classes: int = 0, blocks: int = 0):
        super().__init__()
        self.shape, self.latent, self.classes = tuple(shape), latent, classes
        channels, h, w = shape
        self.encoder = ConvEncoder((channels + classes, h, w), 2 * latent, width)
        self.decoder = (ResidualDecoder(latent + classes, shape, width, cond=classes, blocks=blocks) if blocks
                        else ConvDecoder(latent + classes, shape, width, cond=classes))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logsigma = self.encoder(x).chunk(2, dim=1)
        return mu, logsigma

    def gaussian_sampler(self, mu: torch.Tensor, logsigma: torch.Tensor) -> torch.Tensor:
        """``mu + sigma * eps`` (the reparametrisation trick) in train mode, ``mu`` in eval mode."""
        if not self.training:
            return mu
        return mu + torch.exp(logsigma) * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logsigma = self.encode(x)
        return mu, logsigma, self.decode(self.gaussian_sampler(mu, logsigma))


class CVAE(VAE):
    """Part 2.3's conditional VAE: the one-hot class is joined to the encoder's input (ten
    constant planes beside the image), to the code given to the decoder and, as the course
    allows, to the input of each of the decoder's transposed convolutions, so the decoder
    finds the class wherever it needs it and the code is left the style."""

    conditional = True

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), latent: int = 20, width: int = 32,
                 classes: int = 10, blocks: int = 0):
        super().__init__(shape, latent, width, classes, blocks)

    def one_hot(self, class_num: torch.Tensor) -> torch.Tensor:
        return F.one_hot(class_num.long(), self.classes).float()

    def encode(self, x: torch.Tensor, class_num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        planes = self.one_hot(class_num)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        mu, logsigma = self.encoder(torch.cat([x, planes], dim=1)).chunk(2, dim=1)
        return mu, logsigma, class_num

    def decode_logits(self, z: torch.Tensor, class_num: torch.Tensor) -> torch.Tensor:
        one_hot = self.one_hot(class_num)
        return self.decoder(torch.cat([z, one_hot], dim=1), one_hot)

    def decode(self, z: torch.Tensor, class_num: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, class_num))

    def forward(self, x: torch.Tensor, class_num: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logsigma, class_num = self.encode(x, class_num)
        return mu, logsigma, self.decode(self.gaussian_sampler(mu, logsigma), class_num)


def build_model(name: str, shape: tuple[int, int, int], latent: int, width: int = 32,
                linear: bool = False, refine: int = 0, blocks: int = 0, code_steps: int = 0,
                code_lr: float = 0.05) -> nn.Module:
    """The model behind ``--model``: ``ae`` and ``denoise`` are :class:`Autoencoder` (with
    PCA's linear parts when ``linear``, ``code_steps`` of :meth:`Autoencoder.fit_code` in
    eval mode); the VAEs' decoder has ``blocks`` residual blocks per resolution."""
    if name in ("ae", "denoise"):
        return Autoencoder(shape, latent, width, linear, refine, code_steps, code_lr)
    if name == "vae":
        return VAE(shape, latent, width, blocks=blocks)
    if name == "cvae":
        return CVAE(shape, latent, width, blocks=blocks)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_NAMES)}")


def load_model(run: str | os.PathLike) -> LoadedModel:
    """The model of a ``hw_autoencoder.train`` run: rebuilt from its ``model.pt`` by
    :func:`build_model`, its weights loaded (every key, every shape), in eval mode on the CPU.

    Raises:
        UserError: no run folder, no ``model.pt`` (a run of the older code: train it again), a
            model file of another homework or kind, or weights that do not fit the config.
    """
    def build(saved):
        config = saved.config
        if config["model"] not in MODEL_NAMES:
            raise ValueError(f"unknown model {config['model']!r}")
        return build_model(config["model"], tuple(config["shape"]), config["latent"], config["width"],
                           config["linear"], config["refine"], config["blocks"], config["code_steps"], config["code_lr"])

    return rebuild_model(run, HOMEWORK, build, kind=KIND)


# -- the VAE's loss (the course's functions) ------------------------------------------------------
def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def KL_divergence(mu: torch.Tensor, logsigma: torch.Tensor, reduction: str = "mean") -> torch.Tensor:  # noqa: N802
    """KL(N(mu, sigma^2) || N(0, I)) in nats per sample, the course's formula
    ``-1/2 sum_i (1 + log sigma_i^2 - mu_i^2 - sigma_i^2)`` with ``log sigma^2 = 2 logsigma``.

    Shape: ``mu``, ``logsigma`` (N, D) -> (N,) for ``reduction="none"``, else a scalar.
    """
    kl = -0.5 * (1 + 2 * logsigma - mu.pow(2) - torch.exp(2 * logsigma)).sum(dim=1)
    return _reduce(kl, reduction)


def log_likelihood(x: torch.Tensor, reconstruction: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """log p(x | z) of the Bernoulli decoder in nats per sample: ``sum x log r + (1 - x) log(1 - r)``
    over the pixels, i.e. minus the summed binary cross-entropy (the course's ``loss(reconstruction,
    x)`` with the sign that makes it a log-likelihood; logarithms are floored at -100 as in
    ``torch.nn.functional.binary_cross_entropy``)."""
    bce = F.binary_cross_entropy(reconstruction.float(), x.float(), reduction="none")
    return _reduce(-bce.flatten(1).sum(dim=1), reduction)


def loss_vae(x: torch.Tensor, mu: torch.Tensor, logsigma: torch.Tensor, reconstruction: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """The negative ELBO to minimise: ``KL_divergence - log_likelihood`` (the course's
    objective ``-D_KL + log p(x|z)`` with the sign flipped), nats per sample."""
    return KL_divergence(mu, logsigma, reduction) - log_likelihood(x, reconstruction, reduction)


def elbo_terms(model: VAE, x: torch.Tensor, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-sample ``rec`` (-log p(x|z)), ``kl`` and ``nelbo`` (their sum, the negative ELBO) with
    one reparametrised sample of z, whatever the model's mode, so the figure is a proper
    one-sample estimate of the bound in train and in eval mode alike."""
    if model.conditional:
        mu, logsigma, _ = model.encode(x, labels)
    else:
        mu, logsigma = model.encode(x)
    eps = torch.randn(mu.shape, generator=generator, device="cpu" if generator is not None else mu.device)
    z = mu + torch.exp(logsigma) * eps.to(mu.device)
    reconstruction = model.decode(z, labels) if model.conditional else model.decode(z)
    rec = -log_likelihood(x, reconstruction, reduction="none")
    kl = KL_divergence(mu, logsigma, reduction="none")
    return {"nelbo": rec + kl, "rec": rec, "kl": kl}
