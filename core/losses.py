"""Losses shared by several homeworks; for now the binary segmentation losses of HW5.

Every loss takes raw scores and targets of the same shape, ``logits`` (N, 1, H, W) (no sigmoid
applied) and ``target`` (N, 1, H, W) with values in {0, 1}, and returns a scalar. There is a
functional core (``bce_with_logits``, ``soft_dice_loss``, ``focal_loss``, ``tversky_loss``,
``lovasz_hinge``) and a thin ``nn.Module`` over each, so a training loop can hold a loss as
an object::

    loss_fn = get_loss("dice")            # DiceLoss()
    loss_fn = get_loss("0.5*dice+bce")    # WeightedSum of DiceLoss and BCEWithLogitsLoss
    loss_fn = get_loss("tversky", alpha=0.3, beta=0.7)
    loss = loss_fn(model(images), masks)

Half-precision logits (float16 / bfloat16, e.g. under autocast) are computed in float32: the
region losses sum over millions of pixels, which half precision cannot do accurately.

Conventions of the reference libraries (segmentation_models_pytorch 0.6, torchvision) were read
from their source; where a default here differs on purpose, the docstring says which
parameter value reproduces the reference, and ``tests/test_core_losses.py`` checks that it does.
"""
from __future__ import annotations

import inspect
import math
import re

import torch
from torch import nn

LOSS_NAMES = ("bce", "dice", "focal", "tversky", "lovasz")
REDUCTIONS = ("mean", "sum", "none")


# -- helpers ---------------------------------------------------------------------------------
def _prepare(logits: torch.Tensor, target: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Check that the shapes agree; return float logits (half precision upcast) and target."""
    if logits.shape != target.shape:
        raise ValueError(f"{name}: logits and target must have the same shape, got logits "
                         f"{tuple(logits.shape)} and target {tuple(target.shape)}")
    if logits.dim() < 2:
        raise ValueError(f"{name}: expected a batch (N, 1, H, W), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point() or logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits, target.to(logits.dtype)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def log1p_exp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(x))`` (softplus) without overflow: ``max(x, 0) + log(1 + exp(-|x|))``.

    ``max(x, 0)`` is written ``(x + |x|) / 2``, which is exact in floating point and whose
    autograd derivative at ``x = 0`` is 1/2; with ``clamp``/``relu`` autograd would pick the
    subgradient 1 or 0 there, and the total derivative at 0 would not be ``sigmoid(0)``.
    """
    return (x + x.abs()) / 2 + torch.log1p(torch.exp(-x.abs()))


def _sums(probs: torch.Tensor, target: torch.Tensor, per_image: bool) -> tuple[torch.Tensor, ...]:
    """``(sum p*y, sum p, sum y)`` per image (shape (N,)) or over the whole batch (shape (1,))."""
    rows = probs.shape[0] if per_image else 1
    probs, target = probs.reshape(rows, -1), target.reshape(rows, -1)
    return (probs * target).sum(1), probs.sum(1), target.sum(1)


def _finish_region_loss(loss: torch.Tensor, target_sum: torch.Tensor, skip_empty: bool) -> torch.Tensor:
    """Mean over images (or the single batch row); with ``skip_empty`` a row whose target has
    no foreground contributes 0, as smp's DiceLoss does (it still counts in the mean)."""
    if skip_empty:
        loss = loss * (target_sum > 0).to(loss.dtype)
    return loss.mean()


# -- functional core -------------------------------------------------------------------------
class _StableBCE(torch.autograd.Function):
    """``max(x, 0) - x*y + log(1 + exp(-|x|))`` elementwise, with its gradient written out.

    The small log term is added last, so that a confident right answer keeps its exact tiny
    loss (``log(1 + e^-100)``, not 0). The derivative is the textbook ``sigmoid(x) - y`` (and
    ``-x`` for the target); giving it directly is several times faster than autograd through
    abs/exp/log1p (which also keeps every intermediate for the backward pass), and avoids the subgradient autograd would pick for
    ``max(x, 0)`` at ``x = 0``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        # in place on the temporaries: (max(x, 0) - x*y) + log1p(exp(-|x|)), a third of the time
        log_term = x.abs().neg_().exp_().log1p_()
        return x.clamp_min(0).sub_(x * y).add_(log_term)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, y = ctx.saved_tensors
        # out of place, so that second derivatives (create_graph=True) can be taken through it
        grad_x = (torch.sigmoid(x) - y) * grad if ctx.needs_input_grad[0] else None
        grad_y = -x * grad if ctx.needs_input_grad[1] else None
        return grad_x, grad_y


def _bce(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _StableBCE.apply(x, y)


def bce_with_logits(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on logits, written out in its overflow-safe form.

    The course's BCE ``-[y log s(x) + (1-y) log(1-s(x))]`` with ``s`` the sigmoid equals
    ``x - x*y + log(1 + exp(-x))`` (the template's form, as TF's
    ``sigmoid_cross_entropy_with_logits``); ``exp(-x)`` overflows for very negative ``x``, so
    it is computed as ``max(x, 0) - x*y + log(1 + exp(-|x|))``, with the gradient
    ``sigmoid(x) - y`` written out rather than left to autograd.
    Equals ``torch.nn.BCEWithLogitsLoss(reduction=...)``; soft targets in [0, 1] are allowed.

    Args:
        logits: raw scores, any shape (N, ...).
        target: same shape, values in [0, 1].
        reduction: ``"mean"`` over all elements (default), ``"sum"`` or ``"none"``.
    Shape:
        logits, target: (N, 1, H, W) or any (N, ...); output: scalar, or the input shape.
    """
    logits, target = _prepare(logits, target, "bce_with_logits")
    return _reduce(_bce(logits, target), reduction)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, eps: float = 1e-7,
                   per_image: bool = False, skip_empty: bool = False) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum p*y + smooth) / (sum p + sum y + smooth)``, ``p = sigmoid(logits)``.

    The course's Dice ``D(X, Y) = 2|X ∩ Y| / (|X| + |Y|)`` with the hard sets replaced by
    probabilities (Milletari et al. 2016, "V-Net").

    Reduction: by default the sums run over the whole batch (all images and pixels), giving
    one Dice for the batch, as smp's ``DiceLoss(mode="binary")`` does; this is steadier than
    per-image Dice when lesions are small or absent. ``per_image=True`` computes one Dice per
    image and averages the N losses.

    Stability: ``smooth = 1`` (default) keeps the ratio defined when both masks are empty
    and gives an empty target a loss ``1 - 1/(sum p + 1)`` that still pushes false positives
    down; the denominator is also clamped to at least ``eps``, so ``smooth=0`` is safe too.

    Matching smp 0.6 ``DiceLoss(mode="binary", from_logits=True, smooth=s, eps=e)``: smp's
    score is ``(I + s) / ((sum p + sum y) / 2 + s)``, i.e. our ``smooth = 2 s``; and smp sets
    the loss to 0 when the batch has no foreground pixel (no gradient at all), which
    ``skip_empty=True`` reproduces. We do not skip by default on purpose: an image without
    lesion should still teach the model to predict none.

    Args:
        logits: raw scores (N, 1, H, W).
        target: same shape, values in {0, 1} (soft targets are accepted).
        smooth: added to numerator and denominator (default 1).
        eps: lower bound of the denominator (default 1e-7, smp's).
        per_image: one Dice per image, then the mean (default False: one Dice for the batch).
        skip_empty: an image (or batch) with an empty target contributes 0 (smp's convention).
    Shape:
        logits, target: (N, 1, H, W); output: scalar.
    Reference:
        Milletari, Navab, Ahmadi 2016, "V-Net", https://arxiv.org/abs/1606.04797
    """
    logits, target = _prepare(logits, target, "soft_dice_loss")
    intersection, pred_sum, target_sum = _sums(torch.sigmoid(logits), target, per_image)
    dice = (2 * intersection + smooth) / (pred_sum + target_sum + smooth).clamp_min(eps)
    return _finish_region_loss(1 - dice, target_sum, skip_empty)


def tversky_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 smooth: float = 1.0, eps: float = 1e-7, per_image: bool = False,
                 skip_empty: bool = False) -> torch.Tensor:
    """Tversky loss ``1 - (TP + smooth) / (TP + alpha*FP + beta*FN + smooth)`` on probabilities.

    Salehi et al. 2017, "Tversky loss function for image segmentation using 3D fully
    convolutional deep networks": with ``p = sigmoid(logits)``, ``TP = sum p*y``,
    ``FP = sum p*(1-y)``, ``FN = sum (1-p)*y``. ``alpha`` weights false positives and
    ``beta`` false negatives (the paper's and smp's convention); ``alpha = beta = 0.5`` is the
    Dice loss (``tversky_loss(..., 0.5, 0.5, smooth=s) == soft_dice_loss(..., smooth=2*s)``).
    The default ``alpha=0.3, beta=0.7`` is the paper's best setting: missing lesion pixels
    costs more than extra ones, which helps recall on small lesions. smp defaults to 0.5/0.5
    (then it is only Dice).

    Reduction, ``smooth``, ``eps`` and ``skip_empty`` as in :func:`soft_dice_loss`;
    smp 0.6 ``TverskyLoss(mode="binary", alpha=a, beta=b, smooth=s)`` (gamma 1) equals
    ``tversky_loss(..., alpha=a, beta=b, smooth=s, skip_empty=True)``.

    Shape:
        logits, target: (N, 1, H, W); output: scalar.
    Reference:
        Salehi, Erdogmus, Gholipour 2017, https://arxiv.org/abs/1706.05721
    """
    logits, target = _prepare(logits, target, "tversky_loss")
    tp, pred_sum, target_sum = _sums(torch.sigmoid(logits), target, per_image)
    fp, fn = pred_sum - tp, target_sum - tp
    tversky = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(eps)
    return _finish_region_loss(1 - tversky, target_sum, skip_empty)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float | None = None,
               variant: str = "standard", reduction: str = "mean") -> torch.Tensor:
    """Binary focal loss on logits.

    ``variant="standard"`` (Lin et al. 2017, "Focal Loss for Dense Object Detection"):
    ``-alpha_t (1 - p_t)^gamma log p_t`` with ``p_t = p`` where ``y = 1`` and ``1 - p`` where
    ``y = 0``, ``p = sigmoid(logits)``; both classes are modulated. ``-log p_t`` is the BCE and
    ``1 - p_t = -expm1(-BCE)``, accurate even when ``p_t`` is within rounding of 1.

    ``variant="course"``: the course template's formula, where only the positive term is
    modulated, ``-[(1 - p)^gamma y log p + (1 - y) log(1 - p)]``; easy background pixels keep
    their full BCE weight.

    ``alpha`` (default None: no weighting) multiplies the positive term by ``alpha`` and the
    negative one by ``1 - alpha``. The mean runs over all pixels (the template writes a sum;
    the mean keeps the scale independent of the image size). Equals torchvision's
    ``sigmoid_focal_loss(alpha=a, gamma=g, reduction="mean")`` with ``alpha=a`` (torchvision's
    default is 0.25; its ``alpha=-1`` is our None) and smp's
    ``FocalLoss(mode="binary", alpha=a, gamma=g)``, whose default is also None.

    Args:
        logits: raw scores, any shape (N, ...).
        target: same shape, values in {0, 1}.
        gamma: focusing exponent (default 2, the paper's and the course's).
        alpha: class weight of the positives in [0, 1], or None.
        variant: ``"standard"`` or ``"course"``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
    Shape:
        logits, target: (N, 1, H, W) or any (N, ...); output: scalar, or the input shape.
    Reference:
        Lin, Goyal, Girshick, He, Dollár 2017, https://arxiv.org/abs/1708.02002
    """
    logits, target = _prepare(logits, target, "focal_loss")
    if variant == "standard":
        bce = _bce(logits, target)
        loss = (-torch.expm1(-bce)).pow(gamma) * bce
        if alpha is not None:
            loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    elif variant == "course":
        # -log p = log(1 + exp(-x)),  -log(1 - p) = log(1 + exp(x)),  1 - p = sigmoid(-x)
        positive = torch.sigmoid(-logits).pow(gamma) * log1p_exp(-logits) * target
        negative = log1p_exp(logits) * (1 - target)
        if alpha is not None:
            positive, negative = alpha * positive, (1 - alpha) * negative
        loss = positive + negative
    else:
        raise ValueError(f"focal_loss: variant must be 'standard' or 'course', got {variant!r}")
    return _reduce(loss, reduction)


def lovasz_grad(sorted_target: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss at errors sorted in decreasing order.

    Berman et al. 2018, "The Lovász-Softmax loss", Eq. (8)-(9) and Algorithm 1: for the
    labels ``y`` of the pixels in the order of decreasing error, the Jaccard loss of
    "the first k pixels are wrong" is ``J_k = 1 - (P - Y_k) / (P + B_k)`` with ``P`` the number
    of foreground pixels, ``Y_k`` the foreground and ``B_k`` the background among the first
    k. The gradient is ``g_1 = J_1, g_k = J_k - J_{k-1}``. Works row-wise on (R, P) tensors.
    """
    foreground = sorted_target.sum(1, keepdim=True)
    intersection = foreground - sorted_target.cumsum(1)
    union = foreground + (1 - sorted_target).cumsum(1)
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor, per_image: bool = True) -> torch.Tensor:
    """Lovász hinge loss: a convex surrogate of the Jaccard (IoU) loss (Berman et al. 2018).

    Each pixel has the hinge error ``e = max(0, 1 - x*s)`` with ``s = 2y - 1`` (+1 foreground,
    -1 background). The loss is the Lovász extension of the Jaccard loss at ``e``:
    ``sum_k e_(k) g_k`` with the errors sorted in decreasing order and ``g`` from
    :func:`lovasz_grad`. At 0/1 errors it equals the Jaccard loss of the set of wrong pixels;
    in between it interpolates linearly, so its gradient is ``g`` routed back through the sort.

    ``per_image=True`` (default, as in the paper's binary experiments and its reference code)
    computes one loss per image and averages them, which is the per-image mean IoU the
    course scores (``iou_pytorch``); ``per_image=False`` treats the batch as one image. smp
    0.6 ``LovaszLoss(mode="binary", per_image=...)`` gives the same values (its default is
    ``per_image=False``). All images are sorted at once here rather than one by one.

    Args:
        logits: raw scores (N, 1, H, W).
        target: same shape, values in {0, 1} (binary only: the Jaccard loss is defined on sets).
        per_image: one loss per image, then the mean (default True), or one for the batch.
    Shape:
        logits, target: (N, 1, H, W); output: scalar.
    Reference:
        Berman, Rannen Triki, Blaschko 2018, https://arxiv.org/abs/1705.08790
    """
    logits, target = _prepare(logits, target, "lovasz_hinge")
    rows = logits.shape[0] if per_image else 1
    logits, target = logits.reshape(rows, -1), target.reshape(rows, -1)
    errors = 1 - logits * (2 * target - 1)
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    grad = lovasz_grad(torch.gather(target, 1, order))
    return (torch.relu(errors_sorted) * grad).sum(1).mean()


# -- modules ---------------------------------------------------------------------------------
class BCEWithLogitsLoss(nn.Module):
    """:func:`bce_with_logits` as a module (the course's ``bce_loss``, taking logits)."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce_with_logits(logits, target, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class DiceLoss(nn.Module):
    """:func:`soft_dice_loss` as a module."""

    def __init__(self, smooth: float = 1.0, eps: float = 1e-7, per_image: bool = False, skip_empty: bool = False):
        super().__init__()
        self.smooth, self.eps, self.per_image, self.skip_empty = smooth, eps, per_image, skip_empty

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target, self.smooth, self.eps, self.per_image, self.skip_empty)

    def extra_repr(self) -> str:
        return f"smooth={self.smooth}, per_image={self.per_image}, skip_empty={self.skip_empty}"


class TverskyLoss(nn.Module):
    """:func:`tversky_loss` as a module (``alpha`` weights false positives, ``beta`` false negatives)."""

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1.0, eps: float = 1e-7,
                 per_image: bool = False, skip_empty: bool = False):
        super().__init__()
        self.alpha, self.beta, self.smooth, self.eps = alpha, beta, smooth, eps
        self.per_image, self.skip_empty = per_image, skip_empty

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return tversky_loss(logits, target, self.alpha, self.beta, self.smooth, self.eps,
                            self.per_image, self.skip_empty)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, smooth={self.smooth}, per_image={self.per_image}"


class FocalLoss(nn.Module):
    """:func:`focal_loss` as a module."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, variant: str = "standard",
                 reduction: str = "mean"):
        super().__init__()
        if variant not in ("standard", "course"):
            raise ValueError(f"FocalLoss: variant must be 'standard' or 'course', got {variant!r}")
        self.gamma, self.alpha, self.variant, self.reduction = gamma, alpha, variant, reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.variant, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, variant={self.variant!r}"


class LovaszHingeLoss(nn.Module):
    """:func:`lovasz_hinge` as a module."""

    def __init__(self, per_image: bool = True):
        super().__init__()
        self.per_image = per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return lovasz_hinge(logits, target, self.per_image)

    def extra_repr(self) -> str:
        return f"per_image={self.per_image}"


class WeightedSum(nn.Module):
    """``sum_i w_i * loss_i(logits, target)``, e.g. ``0.5 * dice + bce``.

    Args:
        terms: ``(weight, name, loss module)`` triples; ``name`` is used in ``repr`` and by
            :meth:`components`.
    """

    def __init__(self, terms: list[tuple[float, str, nn.Module]]):
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum needs at least one term")
        self.weights = [float(weight) for weight, _, _ in terms]
        self.names = [name for _, name, _ in terms]
        self.losses = nn.ModuleList(loss for _, _, loss in terms)

    def components(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unweighted value of each term, by name (for logging)."""
        return {name: loss(logits, target) for name, loss in zip(self.names, self.losses)}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        values = self.components(logits, target).values()
        return sum(weight * value for weight, value in zip(self.weights, values))

    def spec(self) -> str:
        return "+".join(name if w == 1 else f"{w:g}*{name}" for w, name in zip(self.weights, self.names))

    def extra_repr(self) -> str:
        return self.spec()


# -- names -----------------------------------------------------------------------------------
LOSSES: dict[str, type[nn.Module]] = {
    "bce": BCEWithLogitsLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "lovasz": LovaszHingeLoss,
}
assert tuple(LOSSES) == LOSS_NAMES

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*\s*)?(?P<name>[A-Za-z_]\w*)\s*")


def parse_loss_spec(spec: str) -> list[tuple[float, str]]:
    """``"2*focal+0.5*lovasz"`` -> ``[(2.0, "focal"), (0.5, "lovasz")]``.

    Grammar: ``term ("+" term)*`` with ``term = [weight "*"] name``, ``weight`` a positive
    decimal number and ``name`` one of :data:`LOSS_NAMES`; spaces are allowed between tokens.
    Anything else raises ``ValueError`` naming the position where reading stopped.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty loss spec; use one of {', '.join(LOSS_NAMES)} or a sum such as '0.5*dice+bce'")
    terms, position = [], 0
    while True:
        match = _TERM.match(spec, position)
        if match is None:
            raise ValueError(f"bad loss spec {spec!r}: expected [weight*]name at position {position} "
                             f"(at {spec[position:]!r}); e.g. '0.5*dice+bce', names: {', '.join(LOSS_NAMES)}")
        name, weight = match["name"], float(match["weight"]) if match["weight"] else 1.0
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSS_NAMES)} "
                             f"or a weighted sum such as '0.5*dice+bce'")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"bad loss spec {spec!r}: weight of {name} must be a positive number, got {weight}")
        if any(name == seen for _, seen in terms):
            raise ValueError(f"bad loss spec {spec!r}: {name} appears twice; write one term with a weight")
        terms.append((weight, name))
        position = match.end()
        if position == len(spec):
            return terms
        if spec[position] != "+":
            raise ValueError(f"bad loss spec {spec!r}: expected '+' at position {position} (at {spec[position:]!r})")
        position += 1
        if not spec[position:].strip():
            raise ValueError(f"bad loss spec {spec!r}: a term is missing after the last '+'")


def _build(name: str, overrides: dict) -> nn.Module:
    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"{name} loss has no option {', '.join(unknown)}; its options are {', '.join(accepted)}")
    return cls(**overrides)


def get_loss(spec: str, **overrides) -> nn.Module:
    """A loss module from its name or a weighted sum of names.

    ``get_loss("dice")`` -> :class:`DiceLoss`; ``get_loss("0.5*dice+bce")`` ->
    :class:`WeightedSum`. Keyword overrides go to the constructor of a single loss
    (``get_loss("tversky", alpha=0.3, beta=0.7)``, ``get_loss("focal", gamma=3)``); with
    several terms they are refused, since it would be unclear which term they are for.
    The module is called as ``loss_fn(logits, target)`` and returns a scalar.
    """
    terms = parse_loss_spec(spec)
    if overrides and len(terms) > 1:
        raise ValueError(f"keyword options {sorted(overrides)} apply to a single loss, "
                         f"but {spec!r} has {len(terms)} terms")
    if len(terms) == 1 and terms[0][0] == 1.0:
        return _build(terms[0][1], overrides)
    return WeightedSum([(weight, name, _build(name, overrides)) for weight, name in terms])
