"""core.losses: hand-computed values, the reference libraries (values and gradients), stability,
the loss-spec parser, and a tiny model that each loss must teach."""
from __future__ import annotations

import math

import pytest
import segmentation_models_pytorch.losses as smp_losses
import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from core.losses import (LOSS_NAMES, BCEWithLogitsLoss, DiceLoss, FocalLoss, LovaszHingeLoss, TverskyLoss,
                         WeightedSum, bce_with_logits, focal_loss, get_loss, lovasz_grad, lovasz_hinge,
                         parse_loss_spec, soft_dice_loss, tversky_loss)


# -- hand-computed values on one 2x2 image ---------------------------------------------------
# logits  [[0,  2],     target [[1, 1],     probabilities p = sigmoid(logits):
#          [-2, 0]]             [1, 0]]     [[0.5, s2], [1 - s2, 0.5]] with s2 = sigmoid(2)
S2 = 1 / (1 + math.exp(-2))
LOG2 = math.log(2)
SOFTPLUS_M2 = math.log(1 + math.exp(-2))  # -log sigmoid(2)


def example():
    logits = torch.tensor([[[[0.0, 2.0], [-2.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]], dtype=torch.float64)
    return logits, target


# sums used by Dice and Tversky: sum p = 0.5 + s2 + (1 - s2) + 0.5 = 2, sum y = 3,
# TP = sum p*y = 0.5 + s2 + (1 - s2) = 1.5, FP = sum p - TP = 0.5, FN = sum y - TP = 1.5
def test_bce_by_hand():
    # per pixel -[y log p + (1-y) log(1-p)]:
    #   x=0,y=1: log 2;  x=2,y=1: log(1+e^-2);  x=-2,y=1: log(1+e^2) = 2 + log(1+e^-2);  x=0,y=0: log 2
    expected = (LOG2 + SOFTPLUS_M2 + 2 + SOFTPLUS_M2 + LOG2) / 4
    assert bce_with_logits(*example()).item() == pytest.approx(expected, abs=1e-6)
    assert bce_with_logits(*example(), reduction="sum").item() == pytest.approx(4 * expected, abs=1e-6)


def test_dice_by_hand():
    # (2 TP + smooth) / (sum p + sum y + smooth)
    assert soft_dice_loss(*example(), smooth=1).item() == pytest.approx(1 - (2 * 1.5 + 1) / (2 + 3 + 1), abs=1e-6)
    assert soft_dice_loss(*example(), smooth=0).item() == pytest.approx(1 - 3 / 5, abs=1e-6)


def test_tversky_by_hand():
    # (TP + smooth) / (TP + alpha FP + beta FN + smooth), alpha on FP = 0.5, beta on FN = 1.5
    got = tversky_loss(*example(), alpha=0.3, beta=0.7, smooth=1).item()
    assert got == pytest.approx(1 - 2.5 / (1.5 + 0.3 * 0.5 + 0.7 * 1.5 + 1), abs=1e-6)
    got = tversky_loss(*example(), alpha=0.7, beta=0.3, smooth=0).item()
    assert got == pytest.approx(1 - 1.5 / (1.5 + 0.7 * 0.5 + 0.3 * 1.5), abs=1e-6)


def test_focal_by_hand():
    # standard: (1 - p_t)^2 * BCE per pixel, p_t = p on positives and 1 - p on negatives
    #   x=0,y=1: 0.25 log 2;  x=2,y=1: (1-s2)^2 log(1+e^-2);  x=-2,y=1: s2^2 (2 + log(1+e^-2));
    #   x=0,y=0: 0.25 log 2
    pixels = [0.25 * LOG2, (1 - S2) ** 2 * SOFTPLUS_M2, S2 ** 2 * (2 + SOFTPLUS_M2), 0.25 * LOG2]
    assert focal_loss(*example()).item() == pytest.approx(sum(pixels) / 4, abs=1e-6)
    # alpha = 0.25 weights the three positives by 0.25 and the negative by 0.75
    weighted = 0.25 * sum(pixels[:3]) + 0.75 * pixels[3]
    assert focal_loss(*example(), alpha=0.25).item() == pytest.approx(weighted / 4, abs=1e-6)
    # course: positives as above, the negative pixel keeps its full BCE log 2
    course = sum(pixels[:3]) + LOG2
    assert focal_loss(*example(), variant="course").item() == pytest.approx(course / 4, abs=1e-6)


def test_lovasz_by_hand():
    # errors 1 - x*s with s = +1 on foreground: [1, -1, 3, 1] for pixels (a, b, c, d) = (0, 2, -2, 0)
    # sorted decreasingly: c (y=1, e=3), a (y=1, e=1), d (y=0, e=1), b (y=1, e=-1)
    # labels [1, 1, 0, 1], P = 3 foreground; J_k = 1 - (P - fg_k) / (P + bg_k):
    #   J = [1 - 2/3, 1 - 1/3, 1 - 1/4, 1 - 0/4] = [1/3, 2/3, 3/4, 1] -> g = [1/3, 1/3, 1/12, 1/4]
    # loss = 3*(1/3) + 1*(1/3) + 1*(1/12) + 0*(1/4) = 17/12 (the tie a/d gives the same sum either way)
    assert lovasz_hinge(*example()).item() == pytest.approx(17 / 12, abs=1e-6)
    g = lovasz_grad(torch.tensor([[1.0, 1.0, 0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor([[1 / 3, 1 / 3, 1 / 12, 1 / 4]], dtype=torch.float64))
    # at 0/1 errors the loss is the Jaccard loss of the wrong pixels: logits [0, 1, 1, -1] give
    # errors [1, 0, 0, 0], only a is wrong, prediction {b, c} vs truth {a, b, c}: 1 - 2/3
    logits = torch.tensor([[[[0.0, 1.0], [1.0, -1.0]]]], dtype=torch.float64)
    assert lovasz_hinge(logits, example()[1]).item() == pytest.approx(1 / 3, abs=1e-6)


# -- against the reference implementations: values and gradients ----------------------------
CASES = [((2, 1, 8, 8), "random"), ((3, 1, 16, 12), "random"), ((1, 1, 5, 7), "random"),
         ((2, 1, 8, 8), "background"), ((2, 1, 8, 8), "foreground"), ((4, 1, 6, 6), "mixed")]


def make_case(shape, kind, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(shape, generator=gen)
    if kind == "random":
        target = (torch.rand(shape, generator=gen) > 0.6).float()
    elif kind == "background":
        target = torch.zeros(shape)
    elif kind == "foreground":
        target = torch.ones(shape)
    else:  # some images empty, some full, some random
        target = (torch.rand(shape, generator=gen) > 0.5).float()
        target[0], target[1] = 0, 1
    return logits.requires_grad_(), target


def assert_same_loss_and_grad(ours, reference, logits, target):
    value, expected = ours(logits, target), reference(logits, target)
    grad, = torch.autograd.grad(value, logits)
    expected_grad, = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(value, expected.to(value.dtype), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("shape,kind", CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_torch(shape, kind, reduction):
    logits, target = make_case(shape, kind)
    assert_same_loss_and_grad(BCEWithLogitsLoss(reduction), nn.BCEWithLogitsLoss(reduction=reduction), logits, target)


def test_bce_accepts_soft_targets_like_torch():
    logits, _ = make_case((2, 1, 8, 8), "random")
    soft = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert_same_loss_and_grad(BCEWithLogitsLoss(), nn.BCEWithLogitsLoss(), logits, soft)
    torch.testing.assert_close(bce_with_logits(logits, soft, "none"),
                               nn.functional.binary_cross_entropy_with_logits(logits, soft, reduction="none"))


@pytest.mark.parametrize("shape,kind", CASES)
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_dice_matches_smp(shape, kind, smooth):
    # smp's score (I + s) / ((sum p + sum y)/2 + s) is ours with smooth = 2 s; smp zeroes an empty batch
    logits, target = make_case(shape, kind)
    reference = smp_losses.DiceLoss("binary", from_logits=True, smooth=smooth / 2)
    assert_same_loss_and_grad(DiceLoss(smooth=smooth, skip_empty=True), reference, logits, target)


@pytest.mark.parametrize("shape,kind", CASES)
def test_per_image_dice_is_the_mean_of_smp_on_each_image(shape, kind):
    logits, target = make_case(shape, kind)
    reference = smp_losses.DiceLoss("binary", from_logits=True)

    def per_image_reference(logits, target):
        return torch.stack([reference(logits[i:i + 1], target[i:i + 1]) for i in range(len(logits))]).mean()

    assert_same_loss_and_grad(DiceLoss(smooth=0, per_image=True, skip_empty=True), per_image_reference, logits, target)


def test_dice_on_an_empty_target_still_penalises_false_positives():
    logits, target = make_case((2, 1, 8, 8), "background")
    loss = soft_dice_loss(logits, target)  # default: smooth 1, no skipping
    grad, = torch.autograd.grad(loss, logits)
    p = torch.sigmoid(logits.detach())
    assert loss.item() == pytest.approx(1 - 1 / (p.sum().item() + 1), rel=1e-6)
    assert (grad > 0).all()  # every logit is pushed down
    skipped = soft_dice_loss(logits, target, skip_empty=True)
    assert skipped.item() == 0 and torch.autograd.grad(skipped, logits)[0].abs().max() == 0


@pytest.mark.parametrize("shape,kind", CASES)
@pytest.mark.parametrize("alpha,beta,smooth", [(0.3, 0.7, 0.0), (0.7, 0.3, 1.0), (0.5, 0.5, 0.0), (0.0, 1.0, 1.0)])
def test_tversky_matches_smp(shape, kind, alpha, beta, smooth):
    logits, target = make_case(shape, kind)
    reference = smp_losses.TverskyLoss("binary", from_logits=True, alpha=alpha, beta=beta, smooth=smooth)
    ours = TverskyLoss(alpha=alpha, beta=beta, smooth=smooth, skip_empty=True)
    assert_same_loss_and_grad(ours, reference, logits, target)


def test_tversky_alpha_weights_false_positives_and_half_half_is_dice():
    logits, target = make_case((3, 1, 16, 12), "random")
    torch.testing.assert_close(tversky_loss(logits, target, 0.5, 0.5, smooth=0.5),
                               soft_dice_loss(logits, target, smooth=1.0))
    # logits all +3 on an image that is half background: only false positives, no false negatives
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    logits = torch.full_like(target, 3.0)
    light, heavy = (tversky_loss(logits, target, alpha, 1 - alpha, smooth=0).item() for alpha in (0.1, 0.9))
    p = 1 / (1 + math.exp(-3))
    tp, fp, fn = 8 * p, 8 * p, 8 * (1 - p)
    assert light == pytest.approx(1 - tp / (tp + 0.1 * fp + 0.9 * fn), abs=1e-6)
    assert heavy == pytest.approx(1 - tp / (tp + 0.9 * fp + 0.1 * fn), abs=1e-6)
    assert heavy > 3 * light


@pytest.mark.parametrize("shape,kind", CASES)
@pytest.mark.parametrize("per_image", [True, False])
def test_lovasz_matches_smp(shape, kind, per_image):
    logits, target = make_case(shape, kind)
    reference = smp_losses.LovaszLoss("binary", per_image=per_image, from_logits=True)
    assert_same_loss_and_grad(LovaszHingeLoss(per_image=per_image), reference, logits, target)


@pytest.mark.parametrize("shape,kind", CASES)
@pytest.mark.parametrize("alpha,gamma", [(None, 2.0), (0.25, 2.0), (0.6, 3.0), (None, 0.0)])
def test_focal_matches_smp(shape, kind, alpha, gamma):
    logits, target = make_case(shape, kind)
    reference = smp_losses.FocalLoss("binary", alpha=alpha, gamma=gamma)
    assert_same_loss_and_grad(FocalLoss(gamma=gamma, alpha=alpha), reference, logits, target)


@pytest.mark.parametrize("shape,kind", CASES)
@pytest.mark.parametrize("alpha", [0.25, None])
def test_focal_matches_torchvision(shape, kind, alpha):
    logits, target = make_case(shape, kind)

    def reference(logits, target):  # torchvision spells "no alpha" as -1
        return sigmoid_focal_loss(logits, target, alpha=-1 if alpha is None else alpha, gamma=2, reduction="mean")

    assert_same_loss_and_grad(FocalLoss(alpha=alpha), reference, logits, target)


@pytest.mark.parametrize("shape,kind", CASES)
def test_course_focal_matches_the_template_formula(shape, kind):
    # the template's formula in probability space, computed in float64 with its eps clamp
    logits, target = make_case(shape, kind)

    def template(logits, target, eps=1e-8, gamma=2):
        p = torch.sigmoid(logits.double()).clamp(eps, 1 - eps)
        t = target.double()
        return -((1 - p) ** gamma * t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean()

    assert_same_loss_and_grad(FocalLoss(variant="course"), template, logits, target)


def test_focal_with_gamma_zero_is_bce_in_both_variants():
    logits, target = make_case((3, 1, 16, 12), "random")
    for variant in ("standard", "course"):
        torch.testing.assert_close(focal_loss(logits, target, gamma=0, variant=variant), bce_with_logits(logits, target))


@pytest.mark.parametrize("name", ["bce", "dice", "tversky", "focal", "focal_course", "lovasz", "lovasz_batch"])
def test_gradients_match_finite_differences(name):
    losses = {"bce": bce_with_logits, "dice": soft_dice_loss, "tversky": tversky_loss, "focal": focal_loss,
              "focal_course": lambda x, y: focal_loss(x, y, variant="course"), "lovasz": lovasz_hinge,
              "lovasz_batch": lambda x, y: lovasz_hinge(x, y, per_image=False)}
    logits, target = make_case((2, 1, 4, 4), "random", seed=3)
    logits = logits.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: losses[name](x, target.double()), (logits,))


def test_bce_gradients_for_target_and_second_order():
    # the hand-written backward: d/dx = sigmoid(x) - y, d/dy = -x, itself differentiable
    logits, _ = make_case((2, 1, 3, 3), "random", seed=4)
    logits = logits.detach().double().requires_grad_()
    soft = torch.rand(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)).requires_grad_()
    assert torch.autograd.gradcheck(bce_with_logits, (logits, soft))
    assert torch.autograd.gradgradcheck(bce_with_logits, (logits, soft))
    ours = torch.autograd.grad(bce_with_logits(logits, soft), (logits, soft))
    expected = torch.autograd.grad(nn.functional.binary_cross_entropy_with_logits(logits, soft), (logits, soft))
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want)


# -- stability -------------------------------------------------------------------------------
def test_bce_is_exact_at_large_logits():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0]).reshape(1, 1, 2, 2).requires_grad_()
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 2, 2)
    # exact: log(1 + e^-100) = 3.7e-44 and 100 + log(1 + e^-100); a probability clamped at
    # eps = 1e-8 would give -log(1e-8) = 18.4 for the wrong pixels, and the unguarded
    # x - x*y + log(1 + exp(-x)) overflows to inf at x = -100
    tiny = math.log1p(math.exp(-100))
    per_pixel = bce_with_logits(logits, target, reduction="none").flatten().tolist()
    assert per_pixel == pytest.approx([0.0, 100.0, 100.0, 0.0], rel=1e-6, abs=1e-40)  # float32
    exact = bce_with_logits(logits.detach().double(), target.double(), reduction="none").flatten().tolist()
    assert exact == pytest.approx([tiny, 100.0 + tiny, 100.0 + tiny, tiny], rel=1e-12, abs=0)
    loss = bce_with_logits(logits, target)
    assert loss.item() == 50.0
    grad, = torch.autograd.grad(loss, logits)
    assert grad.flatten().tolist() == pytest.approx([0.0, -0.25, 0.25, 0.0], abs=1e-12)  # (sigmoid(x) - y) / 4


def test_bce_gradient_at_zero_logit_is_sigmoid_minus_target():
    # autograd through max(x, 0) would take a subgradient, 1 or 0, at x = 0
    logits = torch.zeros(1, 1, 1, 2, requires_grad=True)
    target = torch.tensor([[[[1.0, 0.0]]]])
    grad, = torch.autograd.grad(bce_with_logits(logits, target, "sum"), logits)
    assert grad.flatten().tolist() == [-0.5, 0.5]


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("value", [-100.0, 100.0])
@pytest.mark.parametrize("kind", ["background", "foreground"])
def test_every_loss_is_finite_on_extreme_logits_and_empty_or_full_masks(name, value, kind):
    target = torch.zeros(2, 1, 4, 4) if kind == "background" else torch.ones(2, 1, 4, 4)
    logits = torch.full((2, 1, 4, 4), value, requires_grad=True)
    loss = get_loss(name)(logits, target)
    grad, = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    right = (value > 0) == (kind == "foreground")
    if right:  # confidently right: (near) zero loss
        assert loss.item() == pytest.approx(0.0, abs=1e-6)
    if not right:  # confidently wrong: a clearly positive loss
        assert loss.item() > 0.3


def test_dice_with_empty_masks_and_no_smoothing_is_finite():
    logits = torch.full((2, 1, 4, 4), -100.0, requires_grad=True)
    loss = soft_dice_loss(logits, torch.zeros(2, 1, 4, 4), smooth=0.0)
    grad, = torch.autograd.grad(loss, logits)
    assert loss.item() == 1.0 and torch.isfinite(grad).all()


def test_half_precision_logits_are_computed_in_float32():
    logits, target = make_case((2, 1, 16, 16), "random")
    for name in LOSS_NAMES:
        loss_fn = get_loss(name)
        low = loss_fn(logits.detach().bfloat16(), target.bfloat16())
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(loss_fn(logits.detach().bfloat16().float(), target).item(), rel=1e-6)


# -- names, specs and shapes -----------------------------------------------------------------
def test_names_and_types():
    assert LOSS_NAMES == ("bce", "dice", "focal", "tversky", "lovasz")
    types = [BCEWithLogitsLoss, DiceLoss, FocalLoss, TverskyLoss, LovaszHingeLoss]
    assert [type(get_loss(name)) for name in LOSS_NAMES] == types


def test_weighted_sum_equals_the_sum_of_its_terms():
    logits, target = make_case((3, 1, 16, 12), "random")
    dice, bce = soft_dice_loss(logits, target), bce_with_logits(logits, target)
    assert get_loss("0.5*dice+bce")(logits, target).item() == pytest.approx(0.5 * dice.item() + bce.item(), rel=1e-6)
    combined = get_loss(" 2 * focal + 0.5*lovasz ")
    assert isinstance(combined, WeightedSum) and combined.spec() == "2*focal+0.5*lovasz"
    expected = 2 * focal_loss(logits, target) + 0.5 * lovasz_hinge(logits, target)
    assert combined(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    parts = get_loss("dice+bce").components(logits, target)
    assert parts["dice"].item() == pytest.approx(dice.item()) and parts["bce"].item() == pytest.approx(bce.item())
    assert get_loss("1.5e-1*dice")(logits, target).item() == pytest.approx(0.15 * dice.item(), rel=1e-6)
    assert parse_loss_spec("dice+.5*tversky+1e+1*bce") == [(1.0, "dice"), (0.5, "tversky"), (10.0, "bce")]


@pytest.mark.parametrize("spec,message", [
    ("dice+", "missing after the last"), ("abc", "unknown loss 'abc'.*bce, dice, focal, tversky, lovasz"),
    ("2**dice", "expected \\[weight\\*\\]name at position 0"), ("", "empty loss spec"), ("dice bce", "expected '\\+'"),
    ("-1*dice", "position 0"), ("0*dice", "positive"), ("dice+dice", "twice"), ("dice++bce", "position 5"),
    ("2*", "position 0"), ("dice*2", "expected '\\+' at position 4"), ("Dice", "unknown loss 'Dice'"),
])
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        get_loss(spec)


def test_keyword_overrides():
    assert get_loss("tversky", alpha=0.1, beta=0.9).alpha == 0.1
    focal = get_loss("focal", gamma=3.0, variant="course")
    assert (focal.gamma, focal.variant) == (3.0, "course")
    assert get_loss("lovasz", per_image=False).per_image is False
    logits, target = make_case((2, 1, 8, 8), "random")
    weighted = get_loss("2*dice", smooth=0.0)
    assert weighted(logits, target).item() == pytest.approx(2 * soft_dice_loss(logits, target, smooth=0).item())
    with pytest.raises(ValueError, match="single loss"):
        get_loss("dice+bce", smooth=0.0)
    with pytest.raises(ValueError, match="dice loss has no option gamma; its options are smooth"):
        get_loss("dice", gamma=2)
    with pytest.raises(ValueError, match="variant"):
        get_loss("focal", variant="fancy")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_shape_mismatch_names_both_shapes(name):
    with pytest.raises(ValueError, match=r"logits \(2, 1, 8, 8\) and target \(2, 8, 8\)"):
        get_loss(name)(torch.zeros(2, 1, 8, 8), torch.zeros(2, 8, 8))


# -- each loss teaches a tiny model ----------------------------------------------------------
def synthetic_masks(n=4, size=16, seed=0):
    """Discs of random centre and radius; the image is the mask seen through noise."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = []
    for _ in range(n):
        cy, cx = torch.randint(4, size - 4, (2,), generator=gen).tolist()
        radius = torch.randint(2, 5, (1,), generator=gen).item()
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2).float())
    masks = torch.stack(masks)[:, None]
    images = masks + 0.2 * torch.randn(masks.shape, generator=gen)
    return images, masks


@pytest.fixture
def one_thread():
    """Tiny tensors: threads only add synchronisation cost (a lot of it on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("spec", list(LOSS_NAMES) + ["0.5*dice+bce"])
def test_each_loss_trains_a_one_layer_conv(spec, one_thread):
    torch.manual_seed(0)
    images, masks = synthetic_masks()
    model = nn.Conv2d(1, 1, 3, padding=1)
    loss_fn = get_loss(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    losses = []
    for _ in range(100):
        loss = loss_fn(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, f"{spec}: {losses[0]:.4f} -> {losses[-1]:.4f}"
    iou = ((model(images) > 0) & (masks > 0)).sum() / ((model(images) > 0) | (masks > 0)).sum()
    assert iou > 0.9, f"{spec}: IoU {iou:.3f}"
