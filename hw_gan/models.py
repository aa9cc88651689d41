"""DCGAN generator and discriminator (Radford et al. 2016, "Unsupervised representation
learning with deep convolutional GANs"), as the course specifies them for 64x64 faces:

- discriminator: 4x4 stride-2 convolutions 3 -> 64 -> 128 -> 256 -> 512 (each with BatchNorm
  and LeakyReLU 0.2), then a 4x4 convolution 512 -> 1 on the 4x4 map; 2.77 M parameters;
- generator: a 4x4 transposed convolution from the latent (128 x 1 x 1) to 512 x 4 x 4, then
  4x4 stride-2 transposed convolutions 512 -> 256 -> 128 -> 64 -> 3 (BatchNorm + ReLU, Tanh at
  the end); 3.81 M parameters.

Other sizes (any power of two from 16 to 256) add or remove one stride-2 block per factor of
two; channels double per block away from the image, capped at 8 x ``width``. The
discriminator returns one *logit* per image: the course's ``Sigmoid`` + ``BCELoss`` is
computed as ``BCEWithLogits`` (the same value, without overflow), and the hinge loss needs
the logit anyway.

A trained run's generator is read back by :func:`load_model` from its ``model.pt`` (kind
``"generation"``; ``config``: ``image_size``, ``latent``, ``width``, ``upsample`` (``transpose``
when absent); ``extras``: ``ema``, the decay of the weights' average the run kept, or None).
"""
from __future__ import annotations

import copy
import math
import os

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from core.checkpoint import unwrap
from core.runs import LoadedModel, rebuild_model

HOMEWORK = "hw_gan"
KIND = "generation"
MIN_SIZE, MAX_SIZE = 16, 256
UPSAMPLING = ("transpose", "nearest")   # how the generator doubles the side: see upsampling()


def check_image_size(size: int) -> int:
    """``size`` if it is a power of two in [16, 256]; else ``ValueError`` saying what is allowed."""
    if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise ValueError(f"--image-size {size}: must be a power of two from {MIN_SIZE} to {MAX_SIZE} "
                         "(the DCGAN halves/doubles the image per block), e.g. 32, 64 or 128")
    return size


def block_channels(image_size: int, width: int) -> list[int]:
    """Channels of the stride-2 blocks from the image side: ``[w, 2w, 4w, 8w]`` at 64 px."""
    n_blocks = int(math.log2(check_image_size(image_size))) - 2   # down to a 4x4 map
    return [width * min(2 ** i, 8) for i in range(n_blocks)]


class Discriminator(nn.Module):
    """Image (N, 3, S, S) in [-1, 1] -> logit (N,) that the image is real.

    Args:
        image_size: S, a power of two from 16 to 256.
        width: channels of the first block (64 in the course).
        spectral: spectral normalisation of every convolution (Miyato et al. 2018) instead of BatchNorm.
    """

    def __init__(self, image_size: int = 64, width: int = 64, spectral: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in block_channels(image_size, width):
            conv = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=spectral)
            layers += [spectral_norm(conv)] if spectral else [conv, nn.BatchNorm2d(c_out)]
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        head = nn.Conv2d(c_in, 1, 4, 1, 0, bias=spectral)
        layers += [spectral_norm(head) if spectral else head, nn.Flatten(0)]
        self.net = nn.Sequential(*layers)
        self.image_size = image_size
        init_dcgan_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def upsampling(c_in: int, c_out: int, kind: str = "transpose") -> list[nn.Module]:
    """Layers doubling the side of a (N, c_in, H, W) map to (N, c_out, 2H, 2W), without bias.

    ``transpose``: the DCGAN's 4x4 stride-2 transposed convolution. ``nearest``: nearest-neighbour
    upsampling, then a 3x3 convolution (Odena et al. 2016, "Deconvolution and checkerboard
    artifacts"): every output pixel gets the same number of kernel taps, so the uneven overlap
    of a stride-2 transposed convolution cannot draw a checkerboard.
    """
    if kind == "transpose":
        return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)]
    if kind == "nearest":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
    raise ValueError(f"--upsample {kind}: expected one of {', '.join(UPSAMPLING)}")


class Generator(nn.Module):
    """Latent (N, latent) or (N, latent, 1, 1) -> images (N, 3, S, S) in [-1, 1].

    Args:
        image_size: S, a power of two from 16 to 256.
        latent: size of the latent vector (128 in the course).
        width: channels of the last block before the image (64 in the course).
        upsample: how each stride-2 block doubles the side (:func:`upsampling`): ``transpose``
            (the course's transposed convolutions) or ``nearest`` (upsampling + 3x3 convolution).
            The first layer, latent -> 4x4 map, is the course's transposed convolution either way.
    """

    def __init__(self, image_size: int = 64, latent: int = 128, width: int = 64, upsample: str = "transpose"):
        super().__init__()
        channels = block_channels(image_size, width)[::-1]   # [8w, 4w, 2w, w] at 64 px
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent, channels[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [*upsampling(c_in, c_out, upsample), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [*upsampling(channels[-1], 3, upsample), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.image_size, self.latent, self.upsample = image_size, latent, upsample
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(len(z), self.latent, 1, 1))


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: convolution weights from N(0, 0.02), BatchNorm scales from
    N(1, 0.02) and shifts 0 (Radford et al. 2016, section 4)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def generator_weights(task_state: dict) -> dict:
    """The generator's entries of a GAN task's state dict, without their ``generator.`` prefix."""
    return {k.removeprefix("generator."): v for k, v in task_state.items() if k.startswith("generator.")}


@torch.no_grad()
def refresh_batchnorm(generator: Generator, n: int = 2048, batch_size: int = 64, seed: int = 0) -> Generator:
    """Recompute the BatchNorm running statistics of ``generator`` from ``n`` latents drawn
    with ``seed`` (as ``torch.optim.swa_utils.update_bn`` does for averaged weights): an EMA of
    the weights comes with the trained network's statistics, which do not fit it. Returns it
    in eval mode; the global random state is not used."""
    g = torch.Generator().manual_seed(seed)
    latents = [torch.randn(batch_size, generator.latent, generator=g) for _ in range(n // batch_size)]
    device = next(generator.parameters()).device
    torch.optim.swa_utils.update_bn([z.to(device) for z in latents], generator)
    return generator.eval()


def reported_generator(task, ema=None) -> Generator:
    """The generator a run reports, as a CPU copy (contiguous tensors) in eval mode: the
    task's trained weights, or, given the run's :class:`core.callbacks.EMA` callback, its
    averaged weights with the BatchNorm statistics refreshed for them (:func:`refresh_batchnorm`)."""
    generator = copy.deepcopy(unwrap(task.generator)).cpu().to(memory_format=torch.contiguous_format)
    if ema is not None:
        generator.load_state_dict(generator_weights(ema.averaged_state_dict(task)))
        refresh_batchnorm(generator)
    return generator.eval()


@torch.no_grad()
def generate(generator: Generator, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    """``n`` images in [-1, 1] from latents drawn with ``seed`` (the same seed, the same images)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator.latent, generator=g)
    return torch.cat([generator(z[i:i + batch_size]).float() for i in range(0, n, batch_size)])


def load_model(run: str | os.PathLike) -> LoadedModel:
    """The generator of a ``hw_gan.train`` run from its ``model.pt`` (the averaged weights when
    the run kept an EMA), every weight loaded, in eval mode on the CPU.

    Raises:
        UserError: no run folder, no ``model.pt`` (a run of the older code: train it again), a
            model file of another homework or kind, or weights that do not fit the config.
    """
    def build(saved):
        config = saved.config
        return Generator(config["image_size"], config["latent"], config["width"],
                         config.get("upsample", "transpose"))

    return rebuild_model(run, HOMEWORK, build, kind=KIND)
