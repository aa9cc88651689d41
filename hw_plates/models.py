"""The two models of a plates run and its model file.

The reader is a CRNN (Shi, Bai and Yao, "An End-to-End Trainable Neural Network for
Image-based Sequence Recognition", TPAMI 2017) with a ResNet-like convolutional trunk. The
trunk turns a (3, H, W) crop into a (C, H/16, W/4) map: width is halved twice and height four
times, so each of the W/4 columns is one frame of the sequence. The columns' features
(channels times remaining rows) go through a bidirectional GRU, and a linear layer scores the
alphabet plus the CTC blank in every frame. The alphabet is a buffer of the model, so it is
saved in every checkpoint with the weights. One change to the paper's layout: the GRU is a
residual branch (its output is added to the projected column features before the last
layer), so the convolutional features reach the output directly from the first step.
Several readers trained apart can read as one (:class:`ReaderEnsemble`: each reads, and the
text the members find most likely on average is kept).

The detector, :class:`PlateNet`, is a small CenterNet for one class on a backbone of this
homework's own, sized for a CPU; a box refiner (:class:`hw_plates.refine.BoxRefiner`) trained
with it moves the boxes it finds onto their plates.

A run's ``model.pt`` (:func:`core.runs.save_model`) holds a :class:`PlateModel`, the container
of the parts the run trained (``--stage read``: the reader only; ``detect``: the detector
only; ``both``)::

    config  {"reader": {"arch", "height", "width", "channels", "hidden", "members", "formats"}
             or None ("formats": the plate formats it reads with,
             :meth:`hw_plates.formats.PlateFormats.to_dict`; absent in older runs),
             "detector": {"width"} or None,
             "refiner": {"width", "window", "input_size"} or None (absent in older runs)}
    extras  {"parts": ["reader", "detector"] (those present), "alphabet": the reader's
             characters or None, "detection": {"size", "margin", "score_threshold", "flip",
             "views", "refine_rounds"} or None; runs saved before views have "widen")

:func:`load_model` rebuilds it; a missing part is ``None`` in the container and absent from
``extras["parts"]``, and :meth:`PlateModel.require` stops a command that needs it with one line.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from core import runs
from core.data import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError

from .formats import PlateFormats
from .refine import BoxRefiner
from .text import Alphabet, decode

HOMEWORK = "hw_plates"
KIND = "detection"  # as its predictor: boxes, each labelled with the text read
READER_ARCHS = ("crnn_small", "crnn_resnet18")
DETECTOR_STRIDE = 8
PARTS = ("reader", "detector")
STAGE_OF = {"reader": "read", "detector": "detect"}


class BasicBlock(nn.Module):
    """He et al. 2016's two-conv residual block, with a (row, column) stride."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int] = (1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if cin == cout and stride == (1, 1) else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_trunk(width: int = 32) -> tuple[nn.Module, int]:
    """The homework's own trunk: a stem and four residual stages, strides (2,2) (2,2) (2,1) (2,1)."""
    w = width
    trunk = nn.Sequential(
        nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
        BasicBlock(w, 2 * w, (2, 2)),
        BasicBlock(2 * w, 4 * w, (2, 2)), BasicBlock(4 * w, 4 * w),
        BasicBlock(4 * w, 6 * w, (2, 1)), BasicBlock(6 * w, 6 * w),
        BasicBlock(6 * w, 8 * w, (2, 1)),
    )
    return trunk, 8 * w


def resnet18_trunk(weights: str | None = None) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 up to ``layer3`` with the strides of ``layer2``/``layer3`` made
    (2, 1), so the width keeps W/4 columns (the weights' shapes do not change).

    ``weights="imagenet"`` loads torchvision's ImageNet weights (a download)."""
    from torchvision.models import ResNet18_Weights, resnet18

    try:
        net = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1 if weights == "imagenet" else None)
    except Exception as exc:  # offline: urllib/ssl/HTTP errors
        raise RuntimeError(f"cannot download the ImageNet weights of resnet18 ({type(exc).__name__}); "
                           "train without --weights imagenet") from None
    for layer in (net.layer2, net.layer3):
        layer[0].conv1.stride = (2, 1)
        layer[0].downsample[0].stride = (2, 1)
    # conv1 and the max-pool quarter both sides; layer2 and layer3 halve the height only
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3), 256


class CRNN(nn.Module):
    """CNN trunk -> column features -> (+ bidirectional GRU) -> linear over alphabet + blank.

    Shape:
        input (N, 3, H, W) in [0, 1], H a multiple of 16 and W of 4; output (T, N, C) logits,
        T = W / 4 frames, C = len(alphabet) + 1 (class 0 the blank), the layout CTCLoss takes.
    """

    def __init__(self, alphabet: Alphabet | str, arch: str = "crnn_small", height: int = 32, channels: int = 32,
                 hidden: int = 128, weights: str | None = None, width: int = 128):
        super().__init__()
        self.input_size = (height, width)  # crops are resized to this (any width that is a multiple of 4 runs)
        alphabet = alphabet if isinstance(alphabet, Alphabet) else Alphabet(alphabet)
        if height % 16:
            raise ValueError(f"height {height} is not a multiple of 16")
        if arch == "crnn_small":
            self.trunk, features = small_trunk(channels)
        elif arch == "crnn_resnet18":
            self.trunk, features = resnet18_trunk(weights)
        else:
            raise ValueError(f"unknown reader {arch!r}; choose from {', '.join(READER_ARCHS)}")
        self.register_buffer("alphabet_codes", alphabet.to_tensor())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.project = nn.Sequential(nn.Linear(features * (height // 16), 2 * hidden), nn.LayerNorm(2 * hidden))
        self.rnn = nn.GRU(2 * hidden, hidden, num_layers=2, bidirectional=True, dropout=0.1)
        self.head = nn.Linear(2 * hidden, alphabet.num_classes)
        self.formats: PlateFormats | None = None   # plate formats read with (not in the state dict)

    @property
    def alphabet(self) -> Alphabet:
        return Alphabet.from_tensor(self.alphabet_codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk((images - self.mean) / self.std)       # (N, C, H', T)
        n, c, h, t = features.shape
        sequence = self.project(features.permute(3, 0, 1, 2).reshape(t, n, c * h))  # one frame per column
        out, _ = self.rnn(sequence)
        return self.head(out + sequence)

    @torch.no_grad()
    def read(self, images: torch.Tensor, beam_width: int = 1) -> list[str]:
        """The text of each crop (N, 3, H, W), greedy or by prefix beam search (``beam_width`` >
        1); with active :attr:`formats`, the likeliest text with them (:func:`likeliest_texts`)."""
        log_probs = F.log_softmax(self(images).float(), dim=-1)
        if self.formats is None or not self.formats.active:
            return decode(log_probs, self.alphabet, beam_width)
        return likeliest_texts(log_probs[None], self.alphabet, beam_width, self.formats)[0]

    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Frame log-probabilities of crops (N, 3, H, W) as one source: (1, T, N, C)."""
        return F.log_softmax(self(images).float(), dim=-1)[None]


class ReaderEnsemble(nn.Module):
    """Readers of one alphabet and input size read as one, without assuming that they align.

    CTC lets a reader put each character's peak on any frame the character covers, and two
    readers trained apart (even from the same initial weights) often put them a frame apart, so
    averaging their frames loses characters. :meth:`read` compares texts instead: every member
    reads the crop, and of the texts read, the one with the highest mean log-likelihood over the
    members is kept, each likelihood summed over all the frame paths of that text (the CTC
    forward pass), so it does not matter where a member puts its peaks.
    """

    def __init__(self, members: list[CRNN]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 readers, got {len(members)}")
        first = members[0]
        for member in members[1:]:
            if member.alphabet.chars != first.alphabet.chars or member.input_size != first.input_size:
                raise ValueError("the readers of an ensemble must share their alphabet and input size")
        self.members = nn.ModuleList(members)
        self.input_size = first.input_size
        self.formats: PlateFormats | None = None   # plate formats read with (not in the state dict)

    @property
    def alphabet(self) -> Alphabet:
        return self.members[0].alphabet

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The members' frame log-probabilities, stacked: (M, T, N, C)."""
        return torch.stack([F.log_softmax(member(images).float(), dim=-1) for member in self.members])

    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Frame log-probabilities of crops (N, 3, H, W), one source per member: (M, T, N, C)."""
        return self(images)

    @torch.no_grad()
    def read(self, images: torch.Tensor, beam_width: int = 1) -> list[str]:
        """The text of each crop (N, 3, H, W): of the members' own readings (greedy, or prefix
        beam search for ``beam_width`` > 1), the one likeliest on average over the members
        (:func:`likeliest_texts`; with :attr:`formats`, also the texts they propose)."""
        return likeliest_texts(self(images), self.alphabet, beam_width, self.formats)[0]


def likeliest_texts(log_probs: torch.Tensor, alphabet: Alphabet, beam_width: int = 1,
                    formats: PlateFormats | None = None) -> tuple[list[str], torch.Tensor]:
    """For each of N items read by S sources (readers, or views of a plate, or both), frame
    log-probabilities (S, T, N, C): the text with the highest log-likelihood averaged over the
    sources, among the texts the sources read (greedy, or prefix beam search for
    ``beam_width`` > 1), and that mean log-likelihood divided by the number of frames. Each
    likelihood sums over every frame path of the text (the CTC forward pass), so it does not
    matter on which frames a source puts a character's peak.

    With active ``formats`` (:class:`hw_plates.formats.PlateFormats`) the candidates also
    include the texts of the frequent plate shapes the sources' frames spell best
    (:meth:`~hw_plates.formats.PlateFormats.candidates`), and the text kept is the one with
    the highest mean log-likelihood plus ``formats.weight`` times its shape's log-prior."""
    sources, frames, n, classes = log_probs.shape
    readings = [decode(source_lp, alphabet, beam_width) for source_lp in log_probs]
    shaped = formats is not None and formats.active
    read = [{reading[i] for reading in readings} for i in range(n)]
    if shaped:
        proposed = formats.candidates(log_probs, [{len(t) for t in texts} for texts in read], alphabet)
        read = [texts | more for texts, more in zip(read, proposed)]
    texts, scores = [], []
    for i in range(n):
        options = sorted(read[i])
        targets, lengths = alphabet.encode_batch(options)
        k = len(options)
        paths = log_probs[:, :, i].unsqueeze(2).expand(sources, frames, k, classes)
        paths = paths.permute(1, 0, 2, 3).reshape(frames, sources * k, classes)   # sequence s * k + j
        nll = F.ctc_loss(paths, targets.repeat(sources), torch.full((sources * k,), frames, dtype=torch.long),
                         lengths.repeat(sources), blank=0, reduction="none")
        likelihood = -nll.view(sources, k).mean(dim=0)
        score = likelihood + formats.weight * torch.tensor([formats.log_prior(t) for t in options]) if shaped \
            else likelihood
        best = int(score.argmax())
        texts.append(options[best])
        scores.append(float(likelihood[best]) / frames)
    return texts, torch.tensor(scores)


def make_reader(members: list[CRNN]) -> CRNN | ReaderEnsemble:
    """One reader as it is, several as a :class:`ReaderEnsemble`."""
    return members[0] if len(members) == 1 else ReaderEnsemble(members)


class PlateNet(nn.Module):
    """A small CenterNet for one class: images (B, 3, S, S) in [0, 1], S a multiple of 32 ->
    ``heatmap`` (B, 1, S/8, S/8) logits, ``size`` and ``offset`` (B, 2, S/8, S/8) in map cells.

    ``width`` w: stem w (stride 2), residual stages 1.5w, 3w, 4w, 6w (strides 4 to 32), an FPN
    of 2w channels back to stride 8 (a small FPN: two upsampling steps with skip connections),
    and CenterNet's three heads on it (plate heat map, box size, centre offset).
    """

    num_classes = 1
    stride = DETECTOR_STRIDE

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        c4, c8, c16, c32, neck = 3 * w // 2, 3 * w, 4 * w, 6 * w, 2 * w
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.down4 = BasicBlock(w, c4, (2, 2))
        self.down8 = BasicBlock(c4, c8, (2, 2))
        self.down16 = BasicBlock(c8, c16, (2, 2))
        self.down32 = BasicBlock(c16, c32, (2, 2))
        self.lateral8, self.lateral16, self.top = nn.Conv2d(c8, neck, 1), nn.Conv2d(c16, neck, 1), nn.Conv2d(c32, neck, 1)
        self.smooth = nn.Sequential(nn.Conv2d(neck, neck, 3, 1, 1, bias=False), nn.BatchNorm2d(neck),
                                    nn.ReLU(inplace=True))
        self.heatmap = self._head(neck, 1, bias=-math.log((1 - 0.1) / 0.1))  # every cell starts at p = 0.1
        self.size = self._head(neck, 2)
        self.offset = self._head(neck, 2)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _head(cin: int, cout: int, bias: float = 0.0) -> nn.Sequential:
        head = nn.Sequential(nn.Conv2d(cin, cin, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1))
        nn.init.constant_(head[-1].bias, bias)
        return head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image height and width must be multiples of 32, got {tuple(images.shape[-2:])}")
        x8 = self.down8(self.down4(self.stem((images - self.mean) / self.std)))
        x16 = self.down16(x8)
        x32 = self.down32(x16)
        p16 = self.lateral16(x16) + F.interpolate(self.top(x32), size=x16.shape[-2:], mode="nearest")
        p8 = self.smooth(self.lateral8(x8) + F.interpolate(p16, size=x8.shape[-2:], mode="nearest"))
        return {"heatmap": self.heatmap(p8), "size": self.size(p8), "offset": self.offset(p8)}


class PlateModel(nn.Module):
    """The parts of a plates run: ``reader`` (a :class:`CRNN`, or a :class:`ReaderEnsemble`
    of ``members`` of them) and ``detector`` (a
    :class:`PlateNet`), either ``None`` when the run did not train it (at least one is set),
    and the detector's ``refiner`` (a :class:`hw_plates.refine.BoxRefiner`, or ``None``).
    Its state dict is the parts' under ``reader.``, ``detector.`` and ``refiner.``."""

    def __init__(self, reader: CRNN | None = None, detector: PlateNet | None = None,
                 refiner: BoxRefiner | None = None):
        super().__init__()
        if reader is None and detector is None:
            raise ValueError("a PlateModel needs a reader, a detector or both")
        if refiner is not None and detector is None:
            raise ValueError("a box refiner refines a detector's boxes: give the detector with it")
        self.reader = reader
        self.detector = detector
        self.refiner = refiner

    @property
    def parts(self) -> list[str]:
        """The names of the parts present, in :data:`PARTS` order."""
        return [part for part in PARTS if getattr(self, part) is not None]

    def require(self, part: str, what: str) -> nn.Module:
        """The part ``part``; if the run has none, a :class:`UserError` in one line saying that
        ``what`` needs it and which stage trains it."""
        module = getattr(self, part)
        if module is None:
            (present,) = self.parts
            raise UserError(f"{what} needs a {part}, and this run has only a {present} (trained with --stage "
                            f"{STAGE_OF[present]}): train with --stage {STAGE_OF[part]} or --stage both")
        return module


def save_plate_model(run: str | os.PathLike, reader: CRNN | ReaderEnsemble | None = None, reader_config: dict | None = None,
                     detector: PlateNet | None = None, detector_config: dict | None = None,
                     detection: dict | None = None, refiner: BoxRefiner | None = None) -> Path:
    """Write the run's ``model.pt`` with the parts given (see the module docstring):
    ``reader_config`` rebuilds the reader (arch, height, width, channels, hidden; members, the
    number of readers of an ensemble, 1 if absent; formats, the plate formats it reads with),
    ``detector_config`` the detector (width), ``detection`` says how to use it (size, margin,
    score_threshold, flip, views, refine_rounds); the refiner's config is read off it."""
    container = PlateModel(reader, detector, refiner)
    config = {"reader": dict(reader_config) if reader is not None else None,
              "detector": dict(detector_config) if detector is not None else None,
              "refiner": {"width": refiner.width, "window": list(refiner.window),
                          "input_size": list(refiner.input_size)} if refiner is not None else None}
    extras = {"parts": container.parts, "alphabet": reader.alphabet.chars if reader is not None else None,
              "detection": dict(detection) if detector is not None else None}
    return runs.save_model(run, homework=HOMEWORK, kind=KIND, config=config, state_dict=container.state_dict(),
                           extras=extras)


def build_model(config: dict, extras: dict) -> PlateModel:
    """The :class:`PlateModel` a model file's ``config`` and ``extras`` describe, freshly
    initialised (no download: weights come from the file)."""
    reader = detector = refiner = None
    if config.get("reader") is not None:
        c = config["reader"]
        reader = make_reader([CRNN(extras["alphabet"], c["arch"], c["height"], c["channels"], c["hidden"],
                                   width=c["width"]) for _ in range(c.get("members", 1))])
        if c.get("formats") is not None:
            reader.formats = PlateFormats.from_dict(c["formats"])
    if config.get("detector") is not None:
        detector = PlateNet(config["detector"]["width"])
    if config.get("refiner") is not None:
        c = config["refiner"]
        refiner = BoxRefiner(c["width"], tuple(c["window"]), tuple(c["input_size"]))
    return PlateModel(reader, detector, refiner)


def load_model(run: str | os.PathLike) -> runs.LoadedModel:
    """The reader and/or detector a ``hw_plates.train`` run saved, as a :class:`PlateModel` in
    eval mode on the CPU; ``extras`` say which parts it has, the alphabet and how to detect.

    Raises:
        UserError: no model file (a run stopped before its end is named with its checkpoints),
            or weights that do not fit the config.
    """
    run = Path(run)
    if run.is_dir() and not (run / runs.MODEL_FILE).is_file():
        stopped = [f"{part}/last.pt" for part in ("reader", "detector") if (run / part / "last.pt").is_file()]
        if stopped:
            raise UserError(f"{run}: no {runs.MODEL_FILE}: the run stopped before its end (or was written by an "
                            f"older version of this project); train it again, or continue a stage with --resume "
                            f"{run / stopped[0]}")
    saved = runs.read_model(run, homework=HOMEWORK)
    model = build_model(saved.config, saved.extras)
    try:
        model.load_state_dict(saved.state_dict)
    except RuntimeError as exc:
        raise UserError(f"{saved.path}: its weights do not fit the model its config describes "
                        f"({str(exc).splitlines()[0]})") from None
    return runs.LoadedModel(run, HOMEWORK, saved.kind, model.eval(), saved.config, saved.extras,
                            runs.read_args(run, HOMEWORK), runs.read_metrics(run))
