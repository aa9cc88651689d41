"""CenterNet (Zhou, Wang and Krähenbühl, 2019, "Objects as Points", arXiv:1904.07850).

An object is the peak of a class heatmap at its box centre, plus the box size and the
sub-pixel offset of the centre, all read at that peak. The network is a ResNet-18 backbone
(stride 32), a neck of three (3x3 conv [or DCNv2] -> 4x4 transposed conv, stride 2) blocks
back to stride 4, and three small heads (as MMDetection's ``CTResNetNeck`` + ``CenterNetHead``).

Training targets (:func:`encode_targets`) put an unnormalised Gaussian at each centre whose
radius follows CornerNet's rule (:func:`gaussian_radius`); the heatmap is trained with the
penalty-reduced focal loss (:func:`gaussian_focal_loss`), size and offset with L1 at the
centres (weights 1, 0.1, 1 as in the paper). :func:`decode` keeps 3x3 local maxima and takes
the top k.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.ops import deform_conv2d

from core.data import IMAGENET_MEAN, IMAGENET_STD
from core.errors import UserError
from core.optim import adamw_one_cycle
from core.trainer import Task

STRIDE = 4
LOSS_WEIGHTS = {"heatmap": 1.0, "size": 0.1, "offset": 1.0}


# -- the network ---------------------------------------------------------------------------
class ModulatedDeformConv(nn.Module):
    """DCNv2 (Zhu et al., 2019, "Deformable ConvNets v2"): a 3x3 convolution whose sampling
    points move by learned offsets and are weighted by a learned mask in (0, 1), both predicted
    by a plain convolution initialised to zero (so it starts as an ordinary convolution with
    mask 0.5). Runs through ``torchvision.ops.deform_conv2d``, no compiled extras."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.offset_mask = nn.Conv2d(in_channels, 3 * kernel_size * kernel_size, kernel_size,
                                     padding=kernel_size // 2)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k2 = self.kernel_size * self.kernel_size
        out = self.offset_mask(x)
        offset, mask = out[:, :2 * k2], out[:, 2 * k2:].sigmoid()
        return deform_conv2d(x, offset, self.weight, padding=self.kernel_size // 2, mask=mask)


def _neck_block(in_channels: int, out_channels: int, dcn: bool) -> nn.Sequential:
    """3x3 conv (or DCNv2) -> BN -> ReLU -> 4x4 transposed conv, stride 2 -> BN (the ReLU
    follows in :meth:`CenterNet.forward`, after the optional skip connection is added)."""
    conv = ModulatedDeformConv(in_channels, out_channels) if dcn else \
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels))


def _head(in_channels: int, out_channels: int, bias: float = 0.0) -> nn.Sequential:
    head = nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, 1))
    nn.init.constant_(head[-1].bias, bias)
    return head


def resnet18_backbone(weights: str | None = None) -> nn.Sequential:
    """torchvision's ResNet-18 up to ``layer4`` (512 channels, stride 32).

    ``weights="imagenet"`` loads torchvision's ImageNet weights (a download on first use)."""
    if weights not in (None, "imagenet"):
        raise UserError(f"--weights {weights}: expected 'imagenet' or nothing")
    if weights == "imagenet":
        try:
            net = torchvision.models.resnet18(weights=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
        except Exception as exc:  # offline: URLError, or a partial download
            raise UserError(f"cannot get the ImageNet ResNet-18 weights (no network? {type(exc).__name__}); "
                            "train without --weights") from None
    else:
        net = torchvision.models.resnet18(weights=None)
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)


class CenterNet(nn.Module):
    """CenterNet with a ResNet-18 backbone for ``num_classes`` classes.

    Takes images (B, 3, H, W) in [0, 1] (normalised inside with ImageNet statistics), H and W
    multiples of 32; returns logits ``heatmap`` (B, C, H/4, W/4) and ``size`` / ``offset``
    (B, 2, H/4, W/4) in output-map pixels.

    Args:
        num_classes: number of object classes.
        weights: ``None`` (random init) or ``"imagenet"`` for the backbone.
        dcn: modulated deformable convolutions (DCNv2) in the neck, as the course's
            ``centernet_resnet18_dcnv2`` config.
        neck_channels: output channels of the three upsampling blocks.
        skips: add the backbone's stride-16, 8 and 4 features (1x1 conv + BN) to the neck's
            upsampled maps of the same stride, as U-Net / FPN do and as CenterNet's DLA-34
            aggregates them; the high-resolution features reach the heads directly, which
            makes a randomly initialised network learn to localise much sooner. ``False`` is
            MMDetection's ``CTResNetNeck`` exactly.
    """

    stride = STRIDE

    def __init__(self, num_classes: int, weights: str | None = None, dcn: bool = False,
                 neck_channels: tuple[int, int, int] = (256, 128, 64), skips: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = resnet18_backbone(weights)
        blocks, laterals, channels = [], [], 512
        for out, skip_channels in zip(neck_channels, (256, 128, 64)):
            blocks.append(_neck_block(channels, out, dcn))
            if skips:
                laterals.append(nn.Sequential(nn.Conv2d(skip_channels, out, 1, bias=False), nn.BatchNorm2d(out)))
            channels = out
        self.neck = nn.ModuleList(blocks)
        self.skips = nn.ModuleList(laterals)
        # heatmap bias: every location starts at probability 0.1 (the paper's -2.19)
        self.heatmap = _head(channels, num_classes, bias=-math.log((1 - 0.1) / 0.1))
        self.size = _head(channels, 2)
        self.offset = _head(channels, 2)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"image height and width must be multiples of 32, got {tuple(images.shape[-2:])}")
        x = (images - self.mean) / self.std
        stages = []  # outputs of layer1..layer4 (strides 4, 8, 16, 32)
        for index, layer in enumerate(self.backbone):
            x = layer(x)
            if index >= 4:
                stages.append(x)
        features = stages[-1]
        for i, block in enumerate(self.neck):
            features = block(features)
            if self.skips:
                features = features + self.skips[i](stages[-2 - i])
            features = F.relu(features)
        return {"heatmap": self.heatmap(features), "size": self.size(features), "offset": self.offset(features)}


# -- targets -------------------------------------------------------------------------------
def gaussian_radius(height: float, width: float, min_overlap: float = 0.3, exact: bool = False) -> float:
    """The Gaussian radius of a ``height x width`` box (CornerNet, Law and Deng 2018, Sec. 3.2;
    CenterNet Sec. 3): how far a corner may move while the box keeps IoU ``min_overlap``
    (``t = 0.3`` in the CornerNet paper and in MMDetection's CenterNet; CenterNet's code uses 0.7).

    Three cases, each a quadratic ``a r^2 + b r + c = 0`` in ``r``:

    1. both corners shifted the same way: ``(w-r)(h-r) / (2wh - (w-r)(h-r)) = o``;
    2. box shrunk by ``r`` on every side: ``(w-2r)(h-2r) / (wh) = o``;
    3. box grown by ``r`` on every side: ``wh / ((w+2r)(h+2r)) = o``.

    By default this is the rule of CenterNet's and CornerNet's code,
    ``r_i = (b_i + sqrt(b_i^2 - 4 a_i c_i)) / 2`` with the coefficients written as there, the
    smallest of the three: it drops the ``1/a`` of the quadratic formula and gives larger
    radii, softer targets, with which the native model learns faster from scratch.
    ``exact=True`` returns the smallest exact root instead (for a 10 x 10 box at IoU 0.7,
    ``(10 - sqrt 70) / 2``), as MMDetection 3's ``gaussian_radius`` does.
    """
    h, w, o = float(height), float(width), float(min_overlap)
    s, p = h + w, h * w
    if exact:
        r1 = (s - math.sqrt(s * s - 4 * p * (1 - o) / (1 + o))) / 2
        r2 = (2 * s - math.sqrt(4 * s * s - 16 * (1 - o) * p)) / 8
        r3 = (-2 * o * s + math.sqrt(4 * o * o * s * s + 16 * o * (1 - o) * p)) / (8 * o)
        return max(0.0, min(r1, r2, r3))
    r1 = (s + math.sqrt(s * s - 4 * p * (1 - o) / (1 + o))) / 2
    r2 = (2 * s + math.sqrt(4 * s * s - 16 * (1 - o) * p)) / 2
    r3 = (-2 * o * s + math.sqrt(4 * o * o * s * s + 16 * o * (1 - o) * p)) / 2
    return max(0.0, min(r1, r2, r3))


def draw_gaussian(heatmap: torch.Tensor, cx: int, cy: int, radius: int) -> None:
    """Write ``exp(-d^2 / (2 sigma^2))`` (peak 1 at ``(cx, cy)``, ``sigma = (2r + 1) / 6``) into
    the 2-D ``heatmap`` in place, keeping the maximum where objects overlap."""
    sigma = (2 * radius + 1) / 6
    d = torch.arange(-radius, radius + 1, dtype=heatmap.dtype, device=heatmap.device)
    kernel = torch.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma * sigma))
    height, width = heatmap.shape
    top, bottom = min(cy, radius), min(height - cy, radius + 1)
    left, right = min(cx, radius), min(width - cx, radius + 1)
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    patch = kernel[radius - top:radius + bottom, radius - left:radius + right]
    torch.maximum(region, patch, out=region)


def encode_targets(targets: list[dict], num_classes: int, output_size: tuple[int, int],
                   stride: int = STRIDE, exact_radius: bool = False) -> dict[str, torch.Tensor]:
    """Dense training targets for a batch at the output resolution ``(h, w)``.

    Returns ``heatmap`` (B, C, h, w) with a Gaussian (peak exactly 1, radius
    ``int(gaussian_radius(h, w, exact=exact_radius))`` in output cells) per object, ``size``
    (B, 2, h, w) = box (w, h) / stride and ``offset`` (B, 2, h, w) = centre / stride minus its
    integer cell, both set only where ``mask`` (B, h, w) is True (the centre cells). Two
    objects with the same centre cell keep the larger one's size.
    """
    height, width = output_size
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    batch = len(targets)
    heatmap = torch.zeros(batch, num_classes, height, width, device=device)
    size = torch.zeros(batch, 2, height, width, device=device)
    offset = torch.zeros(batch, 2, height, width, device=device)
    mask = torch.zeros(batch, height, width, dtype=torch.bool, device=device)
    for b, target in enumerate(targets):
        boxes = target["boxes"].float() / stride
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for i in areas.argsort().tolist():  # small first: larger boxes win a shared centre cell
            x1, y1, x2, y2 = boxes[i].tolist()
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(max(int(cx), 0), width - 1), min(max(int(cy), 0), height - 1)
            radius = int(gaussian_radius(y2 - y1, x2 - x1, exact=exact_radius))
            draw_gaussian(heatmap[b, int(target["labels"][i])], ix, iy, radius)
            size[b, :, iy, ix] = torch.tensor([x2 - x1, y2 - y1])
            offset[b, :, iy, ix] = torch.tensor([cx - ix, cy - iy])
            mask[b, iy, ix] = True
    return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask}


# -- losses --------------------------------------------------------------------------------
def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                        beta: float = 4.0) -> torch.Tensor:
    """The penalty-reduced pixel-wise focal loss of CenterNet (Eq. 1), from logits.

    ``L = -1/N * sum( (1-p)^alpha log p             where y = 1
                      (1-y)^beta p^alpha log(1-p)   elsewhere )``, with ``N`` the number of
    locations where ``y = 1`` (at least 1).
    """
    logits, target = logits.float(), target.float()
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    positive = target.eq(1)
    pos_loss = -((1 - p) ** alpha * log_p)[positive].sum()
    neg_loss = -((1 - target) ** beta * p ** alpha * log_not_p)[~positive].sum()
    return (pos_loss + neg_loss) / positive.sum().clamp(min=1)


def centernet_loss(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                   weights: dict[str, float] = LOSS_WEIGHTS) -> dict[str, torch.Tensor]:
    """``loss`` = weighted sum of the heatmap focal loss and the L1 size and offset losses
    (summed over both channels at the centre cells, divided by the number of objects)."""
    mask = targets["mask"]
    n = mask.sum().clamp(min=1)
    terms = {"heatmap": gaussian_focal_loss(outputs["heatmap"], targets["heatmap"])}
    for name in ("size", "offset"):
        pred = outputs[name].float().permute(0, 2, 3, 1)[mask]
        terms[name] = F.l1_loss(pred, targets[name].permute(0, 2, 3, 1)[mask], reduction="sum") / n
    terms["loss"] = sum(weights[k] * terms[k] for k in ("heatmap", "size", "offset"))
    return terms


# -- decoding ------------------------------------------------------------------------------
@torch.no_grad()
def decode(outputs: dict[str, torch.Tensor], stride: int = STRIDE, topk: int = 100,
           image_size: tuple[int, int] | None = None) -> list[dict[str, torch.Tensor]]:
    """Detections per image: peaks of the heatmap that are the maximum of their 3x3
    neighbourhood (the paper's NMS-free decoding), the ``topk`` best over all classes.

    Returns one dict per image with ``boxes`` (K, 4) in input pixels (clipped to
    ``image_size = (height, width)`` when given), ``scores`` (K,) and ``labels`` (K,).
    """
    heat = outputs["heatmap"].float().sigmoid()
    batch, classes, height, width = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, index = peaks.reshape(batch, -1).topk(min(topk, classes * height * width))
    labels, pixel = index // (height * width), index % (height * width)
    ys, xs = (pixel // width).float(), (pixel % width).float()
    gather = pixel[:, None, :].expand(-1, 2, -1)
    size = outputs["size"].float().reshape(batch, 2, -1).gather(2, gather)
    offset = outputs["offset"].float().reshape(batch, 2, -1).gather(2, gather)
    cx, cy = xs + offset[:, 0], ys + offset[:, 1]
    half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1) * stride
    if image_size is not None:
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, image_size[1])
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, image_size[0])
    return [{"boxes": boxes[b], "scores": scores[b], "labels": labels[b]} for b in range(batch)]


@torch.no_grad()
def flip_averaged(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Test-time flip (CenterNet paper, Sec. 5): the outputs for ``images`` and for their
    mirror images, the heatmap logits and sizes of the mirrored pass flipped back and averaged
    with the plain ones; the offsets are the plain pass's (a mirrored offset is not the same
    sub-cell position)."""
    plain, mirrored = model(images), model(images.flip(-1))
    return {"heatmap": (plain["heatmap"] + mirrored["heatmap"].flip(-1)) / 2,
            "size": (plain["size"] + mirrored["size"].flip(-1)) / 2,
            "offset": plain["offset"]}


# -- training ------------------------------------------------------------------------------
class CenterNetTask(Task):
    """CenterNet for :class:`core.trainer.Trainer`.

    A batch is ``(images (B, 3, H, W), targets)`` as :func:`core.detection.data.collate`
    makes it. Validation logs the loss terms and, over the whole epoch, ``map50`` and ``map``
    (torchmetrics / pycocotools). AdamW with a one-cycle schedule stepped per batch over the
    Trainer's ``estimated_stepping_batches``, or a constant LR with ``one_cycle=False``.
    """

    def __init__(self, model: CenterNet, lr: float = 2e-3, weight_decay: float = 1e-4,
                 one_cycle: bool = True, topk: int = 100, loss_weights: dict | None = None):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.one_cycle, self.topk = lr, weight_decay, one_cycle, topk
        self.loss_weights = loss_weights or dict(LOSS_WEIGHTS)
        self._predictions: list[dict] = []
        self._targets: list[dict] = []

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images)

    def losses(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        encoded = encode_targets(targets, self.model.num_classes, outputs["heatmap"].shape[-2:], self.model.stride)
        return centernet_loss(outputs, encoded, self.loss_weights)

    def training_step(self, batch):
        images, targets = batch
        return self.losses(self.model(images), targets)

    def validation_step(self, batch) -> dict:
        images, targets = batch
        outputs = self.model(images)
        self._predictions += [{k: v.cpu() for k, v in p.items()} for p in
                              decode(outputs, self.model.stride, self.topk, tuple(images.shape[-2:]))]
        self._targets += [{k: v.cpu() for k, v in t.items()} for t in targets]
        return {k: v.detach() for k, v in self.losses(outputs, targets).items()}

    def on_validation_epoch_end(self) -> dict:
        from .evaluate import mean_average_precision

        scores = mean_average_precision(self._predictions, self._targets)
        self._predictions, self._targets = [], []
        return {"map50": scores["map50"], "map": scores["map"]}

    def configure_optimizers(self):
        total_steps = self.trainer.estimated_stepping_batches if self.one_cycle else None
        return adamw_one_cycle(self.model.parameters(), self.lr, total_steps, self.weight_decay, pct_start=0.1)


@torch.no_grad()
def predict(model: CenterNet, images: torch.Tensor, batch_size: int = 8, topk: int = 100,
            device: torch.device | str = "cpu", flip: bool = False) -> list[dict[str, torch.Tensor]]:
    """Detections (on the CPU) of ``model`` in eval mode for images (N, 3, H, W) in [0, 1]
    (``flip``: with the test-time flip, :func:`flip_averaged`)."""
    model.eval()
    results = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size].to(device)
        outputs = flip_averaged(model, chunk) if flip else model(chunk)
        for det in decode(outputs, model.stride, topk, tuple(chunk.shape[-2:])):
            results.append({k: v.cpu() for k, v in det.items()})
    return results
