"""Classifiers: the course's SimpleCnn, a small ResNet for training from scratch on a few
hundred images, and any torchvision classifier by name with its head replaced.

``build_model(name, num_classes, weights)`` returns a :class:`Classifier`: the network plus
the names of its head parameters, which staged unfreezing (:mod:`hw_classify.stages`) needs.
``weights`` is ``"none"`` (random init), ``"imagenet"`` (torchvision's weights API; offline
this fails with one sentence saying how to pass a local file) or a path to a state dict, read
weights-only (:func:`core.checkpoint.read_weights_only`).

A trained run keeps its classifier in ``model.pt``: :func:`save_run_model` writes it,
:func:`load_model` rebuilds it.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from core.checkpoint import read_weights_only
from core.data import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from core.runs import LoadedModel, rebuild_model, save_model

OWN_MODELS = ("simple_cnn", "small_resnet")
#: the architectures ``compare`` runs by default (the course's and the classic families)
COMPARE_ARCHS = ("simple_cnn", "small_resnet", "resnet18", "mobilenet_v2", "densenet121", "efficientnet_b0")


class SimpleCnn(nn.Module):
    """The course's baseline: five blocks of Conv3x3 (no padding) + ReLU + MaxPool2 with
    8-16-32-64-96 channels, then one Linear layer. At 224 px the last feature map is 96x5x5,
    so the head is ``Linear(2400, n_classes)``, as in the course notebook; other sizes get the
    matching input width."""

    def __init__(self, num_classes: int, size: int = 224):
        super().__init__()
        layers, channels = [], [3, 8, 16, 32, 64, 96]
        side = size
        for cin, cout in zip(channels, channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            side = (side - 2) // 2
        if side < 1:
            raise ValueError(f"simple_cnn needs images of at least 94 px, got {size}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(96 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al., CVPR 2016): two 3x3 conv-BN, plus a (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A four-stage ResNet with one basic block per stage (widths w, 2w, 4w, 8w), a stride-2
    stem, global average pooling, Dropout and a Linear head: a network small enough to learn
    from a few hundred images without pretraining (``width=32``: about a tenth of ResNet-18's
    parameters)."""

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            BasicBlock(w, w), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 8 * w, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class Classifier:
    """A network and the names of its head's parameters (the part replaced for our classes)."""

    model: nn.Module
    head: list[str]


def torchvision_names() -> list[str]:
    """Classification models torchvision can build by name."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear layer to replace")
    return linears[-1]


def replace_head(model: nn.Module, arch: str, num_classes: int, dropout: float = 0.2) -> list[str]:
    """Put a new head for ``num_classes`` on a torchvision classifier; return its parameter names.

    MobileNetV2 gets the course's ``Sequential(Dropout(0.2), Linear(1280, n))``; other models
    have their last Linear layer replaced by one with ``num_classes`` outputs.
    """
    if arch == "mobilenet_v2":
        model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.last_channel, num_classes))
        prefix = "classifier"
    else:
        name, linear = _last_linear(model)
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], nn.Linear(linear.in_features, num_classes))
        prefix = name
    return [n for n, _ in model.named_parameters() if n == prefix or n.startswith(prefix + ".")]


def imagenet_weights(arch: str):
    """torchvision's default ImageNet weights enum for ``arch``."""
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        raise UserError(f"--weights imagenet: torchvision has no ImageNet weights for {arch!r}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt``/``.pth`` file, read weights-only (no code runs). A dict
    holding it under ``state_dict`` or ``model`` is accepted too.

    Raises:
        UserError: starting with ``--weights``: no such file, a file that cannot be read
            weights-only, or not a dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--weights {path}: file not found (use 'imagenet', 'none' or a state-dict file)")
    try:
        state = read_weights_only(path, what="weights file")
    except UserError as exc:
        raise UserError(f"--weights {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--weights {path}: expected a state dict of tensors")
    return state


def load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], head: list[str], source: str) -> None:
    """Load ``state`` into ``model`` except the head (whose shape is for other classes).

    Raises:
        UserError: a backbone weight is missing or has the wrong shape (another architecture).
    """
    own = model.state_dict()
    head_prefixes = tuple({n.rsplit(".", 1)[0] + "." for n in head})
    backbone = {k: v for k, v in state.items() if not k.startswith(head_prefixes)}
    missing = [k for k in own if not k.startswith(head_prefixes) and k not in backbone]
    wrong = [k for k, v in backbone.items() if k in own and own[k].shape != v.shape]
    unknown = [k for k in backbone if k not in own]
    if missing or wrong or unknown:
        detail = (f"missing {missing[:3]}" if missing else f"shape of {wrong[:3]} differs" if wrong
                  else f"unexpected {unknown[:3]}")
        raise UserError(f"--weights {source}: does not fit this architecture ({detail})")
    model.load_state_dict(backbone, strict=False)


def pretrained_state(arch: str, weights: str = "none") -> dict[str, torch.Tensor] | None:
    """The state dict ``--weights`` asks for: ``None`` for ``"none"``, torchvision's ImageNet
    weights for ``"imagenet"`` (downloaded once into torch's cache), else a file's.

    Raises:
        UserError: the weights cannot be downloaded (offline) or read, or ``arch`` has none.
    """
    if weights in ("none", None):
        return None
    if arch in OWN_MODELS:
        raise UserError(f"--weights {weights}: {arch} has no pretrained weights; use --weights none")
    if weights != "imagenet":
        return read_state_dict(weights)
    enum = imagenet_weights(arch)
    try:
        return enum.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline: URLError, socket errors, HTTP errors
        raise UserError(f"--weights imagenet: cannot download {enum.url} ({type(exc).__name__}); download "
                        f"it elsewhere and pass the file with --weights PATH") from None


def build_model(arch: str, num_classes: int, weights: str = "none", size: int = 224, width: int = 32,
                dropout: float = 0.2, state: dict[str, torch.Tensor] | None = None) -> Classifier:
    """A classifier for ``num_classes``: ``simple_cnn``, ``small_resnet`` or a torchvision model.

    Args:
        arch: model name (see :data:`OWN_MODELS` and :func:`torchvision_names`).
        weights: ``"none"``, ``"imagenet"`` (torchvision's weights API) or a state-dict path
            (see :func:`pretrained_state`); its name is used in messages when ``state`` is given.
        size: input side in pixels (``simple_cnn``'s head depends on it).
        width: ``small_resnet``'s first-stage channels.
        dropout: dropout before the last Linear layer (the course's 0.2).
        state: backbone weights already read with :func:`pretrained_state`.
    """
    if state is None:
        state = pretrained_state(arch, weights)
    if arch in OWN_MODELS:
        model = SimpleCnn(num_classes, size) if arch == "simple_cnn" else SmallResNet(num_classes, width, dropout)
        return Classifier(model, [n for n, _ in model.named_parameters() if n.startswith("classifier")])
    if arch not in torchvision_names():
        raise UserError(f"--arch {arch}: unknown; choose {', '.join(OWN_MODELS)} or a torchvision "
                        "classifier such as resnet18, mobilenet_v2, densenet121, efficientnet_b0")
    model = torchvision.models.get_model(arch, weights=None)
    head = replace_head(model, arch, num_classes, dropout)
    if state is not None:
        load_backbone_weights(model, state, head, weights)
    return Classifier(model, head)


# -- the run's model file -------------------------------------------------------------------------
HOMEWORK = "hw_classify"
KIND = "classification"


def save_run_model(run: str | os.PathLike, model: nn.Module, settings: argparse.Namespace, classes: list[str],
                   load_size: int) -> Path:
    """Write the run's ``model.pt`` (:func:`core.runs.save_model`) with ``model``'s weights.

    ``config`` is ``{"arch", "num_classes", "size", "width"}`` (what :func:`build_model`
    needs; ``size`` is also the side of the images the model takes); ``extras`` holds
    ``classes`` (in output order) and the preprocessing: images are resized to ``load_size``,
    then to ``size`` (or centre-cropped to it, a test-time view), and RGB in [0, 1] is
    normalised with ``mean`` and ``std`` (see :func:`hw_classify.data.build_transform`).
    """
    config = {"arch": settings.arch, "num_classes": len(classes), "size": settings.size, "width": settings.width}
    extras = {"classes": list(classes), "load_size": load_size, "mean": list(IMAGENET_MEAN),
              "std": list(IMAGENET_STD)}
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save_model(run, homework=HOMEWORK, kind=KIND, config=config, state_dict=state, extras=extras)


def load_model(run: str | os.PathLike) -> LoadedModel:
    """The classifier of a ``hw_classify.train`` run, from its ``model.pt`` (read weights-only):
    the network of its config with its weights, in eval mode on the CPU; ``config`` and
    ``extras`` as :func:`save_run_model` describes them.

    Raises:
        UserError: not a run folder, a run of another homework, no ``model.pt`` (a run written
            before model files existed: the message says to train it again), or a model file
            whose config or weights do not rebuild the network.
    """
    def build(saved):
        config = saved.config
        return build_model(config["arch"], config["num_classes"], "none", config["size"], config["width"]).model

    return rebuild_model(run, HOMEWORK, build)
