"""SegNet, UNet and UNet2 for binary segmentation, as the course's homework lays them out.

All three share one skeleton: four encoder blocks, each halving the resolution
(256 -> 128 -> 64 -> 32 -> 16), a bottleneck, and four decoder blocks that double it back.
Each block is 2 (3 in SegNet's deeper blocks) ``Conv3x3 -> BatchNorm -> ReLU`` layers. They
differ in how information crosses from the encoder to the decoder:

* :class:`SegNet` (Badrinarayanan et al., 2015, arXiv:1511.00561): max pooling remembers
  *where* each maximum was (``return_indices=True``) and ``MaxUnpool2d`` puts decoder values
  back at those positions. No feature maps are copied across.
* :class:`UNet` (Ronneberger et al., 2015, arXiv:1505.04597): max pooling down,
  nearest-neighbour upsampling up, and each decoder block also sees the encoder's feature map
  of the same resolution (skip connection by concatenation).
* :class:`UNet2`: the course's variant of UNet where the downsampling is a learned convolution
  with stride 2 and the upsampling a transposed convolution with stride 2.

Two additions to the course's skeleton, both on by default and switchable: each image is
standardised per channel before the first layer (:func:`standardize_images`, ``standardize``:
the model sees contrast, not skin tone), and the UNets' bottleneck uses dilated convolutions
(:func:`dilated_block`, ``dilated``: a wider view of the lesion).

Every model returns one channel of logits (no activation) at the input's resolution. The
input's height and width must be multiples of 16 (four halvings); other sizes raise a
``ValueError`` that names the nearest valid sizes, instead of failing inside a concatenation.

A trained run keeps its network in ``model.pt``: :func:`save_run_model` writes it (config from
:func:`model_config`), :func:`load_model` rebuilds it.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from core.runs import LoadedModel, rebuild_model, save_model

DOWNSAMPLING = 16  # four halvings
MODEL_NAMES = ("segnet", "unet", "unet2")
SMP_UNET = "smp-unet"  # segmentation_models_pytorch's Unet(resnet18), a reference point, not a course model


def nearest_valid_sizes(size: int, multiple: int = DOWNSAMPLING) -> tuple[int, int]:
    """The multiples of ``multiple`` just below and just above ``size`` (below is at least ``multiple``)."""
    below = max(multiple, (size // multiple) * multiple)
    above = below + multiple if below <= size else below
    return below, above


def check_input_size(height: int, width: int, multiple: int = DOWNSAMPLING) -> None:
    """Raise ``ValueError`` unless both sides are positive multiples of ``multiple``."""
    for name, side in (("height", height), ("width", width)):
        if side < multiple or side % multiple:
            below, above = nearest_valid_sizes(side, multiple)
            raise ValueError(f"input {name} {side} is not a multiple of {multiple} (the models halve the "
                             f"resolution 4 times); use e.g. {below} or {above}")


def standardize_images(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per image and channel: subtract the mean, divide by the standard deviation.

    The result does not change when a channel is scaled by a positive gain or shifted by an
    offset (another skin tone, other lighting), up to ``eps``: a lesion is told apart by its
    contrast with the skin around it, not by its absolute colour."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True)
    return (x - mean) / (std + eps)


def conv_block(in_channels: int, out_channels: int, n_convs: int = 2) -> nn.Sequential:
    """``n_convs`` times ``Conv3x3 -> BatchNorm -> ReLU`` (the course's enc_conv/dec_conv block)."""
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def dilated_block(in_channels: int, out_channels: int, dilations: tuple[int, ...] = (1, 2, 4)) -> nn.Sequential:
    """``Conv3x3 -> BN -> ReLU`` layers with growing dilation (Yu & Koltun, 2016, arXiv:1511.07122):
    at the 16x-downsampled bottleneck, dilations 1, 2, 4 widen the receptive field by 2 x (2 + 4)
    x 16 = 192 input pixels at almost no cost, so the decoder sees the whole lesion and its
    surroundings even when the lesion fills most of the image."""
    layers: list[nn.Module] = []
    for i, d in enumerate(dilations):
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=d, dilation=d,
                             bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _widths(width: int) -> list[int]:
    """Channels of the four encoder levels: width, 2*width, 4*width, 8*width."""
    return [width, 2 * width, 4 * width, 8 * width]


class SegNet(nn.Module):
    """SegNet: encoder with max-pooling indices, decoder with ``MaxUnpool2d``.

    Args:
        in_channels: image channels (3 for RGB).
        width: channels of the first block; level ``i`` has ``width * 2**i`` (the paper: 64).

    Shape:
        input (N, in_channels, H, W) with H, W multiples of 16; output (N, 1, H, W) logits.
    """

    def __init__(self, in_channels: int = 3, width: int = 32, standardize: bool = True):
        super().__init__()
        c = _widths(width)
        self.standardize = standardize
        self.enc_conv0 = conv_block(in_channels, c[0])
        self.enc_conv1 = conv_block(c[0], c[1])
        self.enc_conv2 = conv_block(c[1], c[2], n_convs=3)
        self.enc_conv3 = conv_block(c[2], c[3], n_convs=3)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.bottleneck_conv = conv_block(c[3], c[3])
        self.unpool = nn.MaxUnpool2d(2, 2)
        # decoder block i mirrors encoder block 3 - i and ends with that block's input channels
        self.dec_conv0 = conv_block(c[3], c[2], n_convs=3)
        self.dec_conv1 = conv_block(c[2], c[1], n_convs=3)
        self.dec_conv2 = conv_block(c[1], c[0])
        self.dec_conv3 = nn.Sequential(conv_block(c[0], c[0], n_convs=1), nn.Conv2d(c[0], 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x.shape[-2], x.shape[-1])
        if self.standardize:
            x = standardize_images(x)
        e0, i0 = self.pool(self.enc_conv0(x))    # H/2
        e1, i1 = self.pool(self.enc_conv1(e0))   # H/4
        e2, i2 = self.pool(self.enc_conv2(e1))   # H/8
        e3, i3 = self.pool(self.enc_conv3(e2))   # H/16
        b = self.bottleneck_conv(e3)
        d0 = self.dec_conv0(self.unpool(b, i3))   # H/8
        d1 = self.dec_conv1(self.unpool(d0, i2))  # H/4
        d2 = self.dec_conv2(self.unpool(d1, i1))  # H/2
        return self.dec_conv3(self.unpool(d2, i0))  # H, logits


class _UNetBase(nn.Module):
    """The U-shaped network; subclasses choose the down- and upsampling layers."""

    def __init__(self, in_channels: int = 3, width: int = 32, dilated: bool = True, standardize: bool = True):
        super().__init__()
        c = _widths(width)
        self.standardize = standardize
        self.enc_conv0 = conv_block(in_channels, c[0])
        self.enc_conv1 = conv_block(c[0], c[1])
        self.enc_conv2 = conv_block(c[1], c[2])
        self.enc_conv3 = conv_block(c[2], c[3])
        self.down = nn.ModuleList(self.make_down(ch) for ch in c)
        self.bottleneck_conv = dilated_block(c[3], 2 * c[3]) if dilated else conv_block(c[3], 2 * c[3])
        ups_in = [2 * c[3], c[3], c[2], c[1]]
        self.up = nn.ModuleList(self.make_up(cin, cout) for cin, cout in zip(ups_in, reversed(c)))
        # after concatenation with the skip, decoder block i sees 2 * c[3 - i] channels
        self.dec_conv0 = conv_block(2 * c[3], c[3])
        self.dec_conv1 = conv_block(2 * c[2], c[2])
        self.dec_conv2 = conv_block(2 * c[1], c[1])
        self.dec_conv3 = conv_block(2 * c[0], c[0])
        self.head = nn.Conv2d(c[0], 1, 1)

    def make_down(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def make_up(self, in_channels: int, out_channels: int) -> nn.Module:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(x.shape[-2], x.shape[-1])
        skips = []
        h = standardize_images(x) if self.standardize else x
        for enc, down in zip((self.enc_conv0, self.enc_conv1, self.enc_conv2, self.enc_conv3), self.down):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.bottleneck_conv(h)
        for dec, up, skip in zip((self.dec_conv0, self.dec_conv1, self.dec_conv2, self.dec_conv3),
                                 self.up, reversed(skips)):
            h = dec(torch.cat([up(h), skip], dim=1))
        return self.head(h)


class UNet(_UNetBase):
    """U-Net: max pooling down, nearest-neighbour upsampling + 3x3 conv up, skips by concatenation.

    Args / Shape: as :class:`SegNet`.
    """

    def make_down(self, channels: int) -> nn.Module:
        return nn.MaxPool2d(2, 2)

    def make_up(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(in_channels, out_channels, 3, padding=1))


class UNet2(_UNetBase):
    """U-Net with learned resampling: stride-2 3x3 convolutions down, stride-2 transposed
    convolutions up (the course's "replace max-pooling and upsampling" task).

    Args / Shape: as :class:`SegNet`.
    """

    def make_down(self, channels: int) -> nn.Module:
        return nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def make_up(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)


def build_model(name: str, width: int = 32, in_channels: int = 3, **options) -> nn.Module:
    """``"segnet"``, ``"unet"`` or ``"unet2"`` with the given base width, or ``"smp-unet"``:
    segmentation_models_pytorch's ``Unet(encoder_name="resnet18", encoder_weights=None)``
    (randomly initialised; ``width`` is ignored)."""
    if name == SMP_UNET:
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=in_channels, classes=1)
    models = {"segnet": SegNet, "unet": UNet, "unet2": UNet2}
    if name not in models:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return models[name](in_channels=in_channels, width=width, **options)


# -- the run's model file -------------------------------------------------------------------------
HOMEWORK = "hw_segment"
KIND = "segmentation"
CLASSES = ["lesion"]
THRESHOLD = 0.0  # a pixel is lesion where its logit is above this (probability 0.5)


def model_config(settings: argparse.Namespace | dict) -> dict:
    """What rebuilds a run's network, from its options (parsed, or its ``args.json``):
    ``{"model", "width", "size", "options"}``; ``size`` is the image side it was trained at,
    ``options`` the keyword options of :func:`build_model` (``dilated``, ``standardize``)."""
    settings = vars(settings) if isinstance(settings, argparse.Namespace) else settings
    options = {}
    if settings.get("plain_bottleneck") and settings["model"] in ("unet", "unet2"):
        options["dilated"] = False
    if settings.get("no_standardize") and settings["model"] in MODEL_NAMES:
        options["standardize"] = False
    return {"model": settings["model"], "width": settings["width"], "size": settings["size"], "options": options}


def build_from_config(config: dict) -> nn.Module:
    """The network :func:`model_config` describes, freshly initialised."""
    return build_model(config["model"], config["width"], **config.get("options", {}))


def save_run_model(run: str | os.PathLike, model: nn.Module, config: dict) -> Path:
    """Write the run's ``model.pt`` (:func:`core.runs.save_model`): ``model``'s weights, the
    ``config`` of :func:`model_config`, and as extras the class names and the logit threshold."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save_model(run, homework=HOMEWORK, kind=KIND, config=config, state_dict=state,
                      extras={"classes": list(CLASSES), "threshold": THRESHOLD})


def load_model(run: str | os.PathLike) -> LoadedModel:
    """The model of a ``hw_segment.train`` run, from its ``model.pt`` (read weights-only): the
    network of its config with its weights, in eval mode on the CPU. ``config["size"]`` is the
    image side it takes (RGB in [0, 1]); ``extras["threshold"]`` the logit above which a pixel
    is lesion; ``extras["classes"]`` is ``["lesion"]``.

    Raises:
        UserError: not a run folder, a run of another homework, no ``model.pt`` (a run written
            before model files existed: the message says to train it again), or a model file
            whose config or weights do not rebuild the network.
    """
    return rebuild_model(run, HOMEWORK, lambda saved: build_from_config(saved.config))
