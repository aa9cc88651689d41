"""core.detection: the dataset and its augmentation, CenterNet targets / loss / decoding, mAP, learning."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.detection.data import DetectionDataset, DetectionSample, collate
from core.detection.centernet import (CenterNet, CenterNetTask, ModulatedDeformConv, centernet_loss, decode,
                                      encode_targets, flip_averaged, gaussian_focal_loss, gaussian_radius, predict)
from core.detection.evaluate import detection_metrics, mean_average_precision, precision_recall_f1


pytestmark = pytest.mark.usefixtures("one_thread")


def _target(boxes, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}


# -- augmentation -----------------------------------------------------------------------------
def _bright_box(image: torch.Tensor) -> list[int]:
    ys, xs = torch.where(image.mean(0) > 0.5)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_augmentation_keeps_the_box_on_a_drawn_rectangle():
    image = np.zeros((300, 400, 3), np.uint8)
    image[50:120, 100:220] = 255                       # the object: x 100..220, y 50..120
    sample = DetectionSample(image, np.array([[100, 50, 220, 120]], np.float32), np.array([1]))
    train = DetectionDataset([sample], size=256, train=True)
    torch.manual_seed(0)
    moved = 0
    for _ in range(20):
        x, target = train[0]
        assert x.shape == (3, 256, 256) and x.dtype == torch.float32
        if len(target["boxes"]) == 0:                  # cropped away: the box must go with it
            assert (x.mean(0) > 0.5).sum() < 10
            continue
        box = target["boxes"][0].tolist()
        assert target["labels"].tolist() == [1]
        assert box == pytest.approx(_bright_box(x), abs=1.5)   # bilinear edges: within 1.5 px
        moved += abs(box[0] - 100 * 256 / 400) > 3
    assert moved >= 10                                  # the augmentation did move things
    x, target = DetectionDataset([sample], size=256)[0]    # no augmentation: a plain resize
    assert target["boxes"][0].tolist() == pytest.approx([64.0, 42.667, 140.8, 102.4], abs=1e-3)


def test_augmentation_follows_torch_seed_and_keeps_images_without_boxes():
    rng = np.random.default_rng(0)
    sample = DetectionSample(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8),
                             np.array([[10, 10, 40, 30]], np.float32), np.array([0]))
    empty = DetectionSample(sample.image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    train = DetectionDataset([sample, empty], size=64, train=True)
    torch.manual_seed(5)
    first = train[0]
    torch.manual_seed(5)
    again = train[0]
    other = train[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])
    assert not torch.equal(first[0], other[0])              # a new draw for the next sample
    x, target = train[1]
    assert x.shape == (3, 64, 64) and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


# -- CenterNet targets, loss, decoding ---------------------------------------------------------
def _flat_samples(n=4, side=64, box=(20, 20, 30, 30)):
    """``n`` images of one grey level each (40, 80, ...) with one 10 x 10 box labelled by the image."""
    return [DetectionSample(np.full((side, side, 3), 40 * (i + 1), dtype=np.uint8),
                            np.array([box], dtype=np.float32), np.array([i])) for i in range(n)]


NO_JITTER = dict(scale=(1.0, 1.0), shift=0.0, flip=0.0, colour=0.0, hue=0.0)


def test_training_crops_keep_the_objects_scale():
    """Random 32 px windows of 64 px images: the box keeps its 10 x 10 px wherever the window
    leaves it whole, is clipped where the window cuts it, and is dropped when under 2 px."""
    torch.manual_seed(0)
    data = DetectionDataset(_flat_samples(1), size=64, train=True, crop=32, **NO_JITTER)
    whole = cut = empty = 0
    for _ in range(60):
        image, target = data[0]
        assert image.shape == (3, 32, 32)
        boxes = target["boxes"]
        assert ((boxes >= 0) & (boxes <= 32)).all()
        if len(boxes) == 0:
            empty += 1
            continue
        w, h = (boxes[0, 2] - boxes[0, 0]).item(), (boxes[0, 3] - boxes[0, 1]).item()
        assert 2 <= w <= 10 and 2 <= h <= 10
        if 0 < boxes[0, 0] and boxes[0, 2] < 32 and 0 < boxes[0, 1] and boxes[0, 3] < 32:
            assert (w, h) == (10, 10)
            whole += 1
        else:
            cut += 1
    assert whole > 0 and cut > 0 and empty > 0
    # validation images are whole, resized only
    image, target = DetectionDataset(_flat_samples(1), size=64, crop=32)[0]
    assert image.shape == (3, 64, 64) and target["boxes"].tolist() == [[20, 20, 30, 30]]


def test_mosaic_tiles_four_images_with_their_own_boxes():
    """Mosaics of four grey images: each box lies in the tile of the image it was labelled in
    (the grey level under its centre is that image's), tiles of several images meet in one
    sample, and the same torch seed draws the same mosaic."""
    data = DetectionDataset(_flat_samples(4), size=64, train=True, crop=48, mosaic=1.0, **NO_JITTER)
    torch.manual_seed(1)
    levels_seen, boxes_seen = set(), 0
    for index in range(40):
        image, target = data[index % 4]
        assert image.shape == (3, 48, 48)
        pixels = (image[0] * 255).round().long()
        levels = set(pixels.unique().tolist()) - {0}
        assert levels <= {40, 80, 120, 160}
        levels_seen.add(len(levels))
        for box, label in zip(target["boxes"], target["labels"]):
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            assert pixels[cy, cx] == 40 * (label + 1)
            boxes_seen += 1
    assert max(levels_seen) >= 3 and boxes_seen >= 40
    torch.manual_seed(5)
    first = data[2]
    torch.manual_seed(5)
    again = data[2]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1]["boxes"], again[1]["boxes"])


def test_crop_and_mosaic_refuse_impossible_values():
    with pytest.raises(ValueError, match="crop must be between 1 and size \\(64\\), got 96"):
        DetectionDataset(_flat_samples(1), size=64, train=True, crop=96)
    with pytest.raises(ValueError, match="mosaic must be a probability, got 1.5"):
        DetectionDataset(_flat_samples(1), size=64, train=True, mosaic=1.5)


def test_gaussian_radius_follows_the_three_cases():
    # exact roots: for a 10 x 10 box at IoU 0.7, shrinking, (10-2r)^2/100 = 0.7, gives the smallest
    assert gaussian_radius(10, 10, 0.7, exact=True) == pytest.approx((10 - math.sqrt(70)) / 2)
    h, w = 12.0, 30.0
    r = gaussian_radius(h, w, 0.7, exact=True)
    cases = [(w - r) * (h - r) / (2 * w * h - (w - r) * (h - r)),   # both corners shifted
             (w - 2 * r) * (h - 2 * r) / (w * h),                     # shrunk
             w * h / ((w + 2 * r) * (h + 2 * r))]                     # grown
    assert min(cases, key=lambda iou: abs(iou - 0.7)) == pytest.approx(0.7)
    assert all(iou >= 0.7 - 1e-9 for iou in cases)
    # the papers' code: case 3 written as 4o r^2 - 2o(h+w) r + (o-1)hw, root (-b + sqrt(b^2 - 4ac)) / 2
    for o, expected in ((0.7, 2.7332), (0.3, 4.9545)):
        s, p = 10.0 + 10.0, 100.0
        reference = (-2 * o * s + math.sqrt((2 * o * s) ** 2 + 4 * 4 * o * (1 - o) * p)) / 2
        assert gaussian_radius(10, 10, o) == pytest.approx(reference) == pytest.approx(expected, abs=1e-4)


def test_encoding_puts_a_unit_peak_at_each_centre_and_decodes_back_exactly():
    boxes = [[8.0, 8.0, 168.0, 168.0], [181.0, 30.0, 221.0, 90.5], [60.0, 190.0, 68.0, 196.0]]
    target = _target(boxes, [0, 1, 1])
    enc = encode_targets([target], num_classes=2, output_size=(64, 64), stride=4)
    heat = enc["heatmap"][0]
    assert heat[0, 22, 22] == 1.0 and heat[1, 15, 50] == 1.0 and heat[1, 48, 16] == 1.0
    assert int(enc["mask"].sum()) == 3 and int((heat == 1).sum()) == 3
    radius = int(gaussian_radius(40, 40, 0.3))                    # first box: 40 x 40 cells -> 19
    assert radius == 19
    sigma = (2 * radius + 1) / 6
    assert heat[0, 22, 23].item() == pytest.approx(math.exp(-1 / (2 * sigma ** 2)), rel=1e-5)
    assert heat[0, 24, 25].item() == pytest.approx(math.exp(-13 / (2 * sigma ** 2)), rel=1e-5)
    assert heat[0, 22, 41].item() > 0.0 and heat[0, 22, 42].item() == 0.0   # radius 19, not 20
    assert enc["size"][0, :, 15, 50].tolist() == pytest.approx([10.0, 15.125])
    assert enc["offset"][0, :, 15, 50].tolist() == pytest.approx([0.25, 0.0625])
    outputs = {"heatmap": torch.logit(heat[None].clamp(1e-6, 1 - 1e-6)), "size": enc["size"],
               "offset": enc["offset"]}
    found = decode(outputs, stride=4, topk=3)[0]
    order = found["boxes"][:, 0].argsort()
    assert found["boxes"][order].flatten().tolist() == pytest.approx(sum(sorted(boxes), []), abs=1e-4)
    assert found["labels"][order].tolist() == [0, 1, 1]
    assert found["scores"].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


def test_gaussian_focal_loss_against_a_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.9]]]])
    p = torch.sigmoid(logits).flatten().tolist()
    pos = -(1 - p[0]) ** 2 * math.log(p[0])
    neg = -sum((1 - y) ** 4 * q ** 2 * math.log(1 - q) for y, q in zip([0.5, 0.0, 0.9], p[1:]))
    assert gaussian_focal_loss(logits, target).item() == pytest.approx(pos + neg, rel=1e-6)
    # no positive location: the sum is divided by 1
    assert gaussian_focal_loss(logits, target * 0.5).item() == pytest.approx(
        -sum((1 - y) ** 4 * q ** 2 * math.log(1 - q) for y, q in zip([0.5, 0.25, 0.0, 0.45], p)), rel=1e-6)


def test_centernet_loss_weights_l1_terms_per_object():
    enc = encode_targets([_target([[0, 0, 16, 8], [32, 32, 48, 64]], [0, 0])], 1, (16, 16), stride=4)
    outputs = {"heatmap": torch.full((1, 1, 16, 16), -20.0), "size": enc["size"] + 1.0, "offset": enc["offset"]}
    outputs["heatmap"][enc["heatmap"] == 1] = 20.0
    terms = centernet_loss(outputs, enc)
    assert terms["size"].item() == pytest.approx(2.0)          # |1| + |1| per object
    assert terms["offset"].item() == pytest.approx(0.0)
    assert terms["heatmap"].item() < 1e-6
    assert terms["loss"].item() == pytest.approx(terms["heatmap"].item() + 0.2, abs=1e-6)


def test_deformable_conv_starts_as_half_a_plain_convolution():
    conv = ModulatedDeformConv(3, 4)                # zero offsets, mask sigmoid(0) = 0.5
    x = torch.randn(2, 3, 9, 11)
    assert torch.allclose(conv(x), 0.5 * F.conv2d(x, conv.weight, padding=1), atol=1e-5)


@pytest.mark.parametrize("dcn, skips", [(False, False), (True, False), (False, True)])
def test_centernet_output_shapes(dcn, skips):
    model = CenterNet(num_classes=3, dcn=dcn, skips=skips).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 128, 96))
    assert out["heatmap"].shape == (2, 3, 32, 24) and out["size"].shape == out["offset"].shape == (2, 2, 32, 24)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 100, 96))
    # the skip connections: one 1x1 conv + BN per upsampling stage (256, 128, 64 channels)
    extra = sum(p.numel() for p in model.skips.parameters())
    assert extra == (256 * 256 + 2 * 256 + 128 * 128 + 2 * 128 + 64 * 64 + 2 * 64 if skips else 0)


# -- metrics ----------------------------------------------------------------------------------
def test_map_on_hand_built_cases():
    truth = [_target([[10, 10, 50, 50], [60, 60, 90, 100]], [0, 0]), _target([[5, 5, 40, 30]], [1])]
    perfect = [dict(t, scores=torch.tensor([0.9] * len(t["labels"]))) for t in truth]
    scores = mean_average_precision(perfect, truth, ["a", "b"])
    assert scores["map50"] == pytest.approx(1.0) and scores["map"] == pytest.approx(1.0)
    # class a: one of its two boxes missed -> precision 1 up to recall 0.5: 51 of COCO's 101
    # recall points; class b perfect -> mean (51/101 + 1) / 2
    missed = [{"boxes": truth[0]["boxes"][:1], "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}, perfect[1]]
    scores = mean_average_precision(missed, truth, ["a", "b"])
    assert scores["ap50_a"] == pytest.approx(51 / 101) and scores["ap50_b"] == pytest.approx(1.0)
    assert scores["map50"] == pytest.approx((51 / 101 + 1) / 2)


def test_map_matches_pycocotools_on_a_random_case():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    truth, preds, images, annotations, detections = [], [], [], [], []
    all_scores = rng.permutation(np.linspace(0.1, 0.95, 24))      # no ties: both sort the same way
    for image_id in range(6):
        xy = rng.uniform(0, 150, (4, 2))
        boxes = np.round(np.concatenate([xy, xy + rng.uniform(10, 60, (4, 2))], 1))
        labels = rng.integers(0, 2, 4)
        noisy = np.round(boxes + rng.normal(0, 6, boxes.shape))
        noisy = np.concatenate([np.minimum(noisy[:, :2], noisy[:, 2:] - 1), np.maximum(noisy[:, 2:], noisy[:, :2] + 1)], 1)
        scores = all_scores[4 * image_id:4 * image_id + 4]
        truth.append(_target(boxes.tolist(), labels.tolist()))
        preds.append({**_target(noisy.tolist(), labels.tolist()), "scores": torch.tensor(scores, dtype=torch.float32)})
        images.append({"id": image_id})
        for box, label in zip(boxes, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [*box[:2], *(box[2:] - box[:2])], "area": float(np.prod(box[2:] - box[:2])),
                                "iscrowd": 0})
        for box, label, score in zip(noisy, labels, scores):
            detections.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                               "bbox": [*box[:2], *(box[2:] - box[:2])]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 0}, {"id": 1}]}
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    ours = mean_average_precision(preds, truth)
    assert 0.05 < ours["map"] < 0.95
    assert ours["map"] == pytest.approx(evaluator.stats[0], abs=1e-4)
    assert ours["map50"] == pytest.approx(evaluator.stats[1], abs=1e-4)


def test_precision_recall_f1_by_hand():
    truth = [_target([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0, 0, 1])]
    preds = [{"boxes": torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 29, 30], [40, 40, 50, 50],
                                     [60, 60, 70, 70]], dtype=torch.float32),
              "labels": torch.tensor([0, 0, 0, 0, 1]), "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.1])}]
    counts = precision_recall_f1(preds, truth, 2, score_threshold=0.3)
    # class 0: a hit, a duplicate (fp), a hit, a wrong-class box on the class-1 object (fp)
    assert counts["tp"].tolist() == [2, 0] and counts["fp"].tolist() == [2, 0] and counts["fn"].tolist() == [0, 1]
    assert counts["precision"].tolist() == pytest.approx([0.5, 0.0])
    assert counts["recall"].tolist() == pytest.approx([1.0, 0.0])
    assert counts["f1"].tolist() == pytest.approx([2 / 3, 0.0])
    metrics = detection_metrics(preds, truth, ["a", "b"], score_threshold=0.3)
    assert metrics["precision"] == pytest.approx(0.5) and metrics["recall"] == pytest.approx(2 / 3)


# -- learning -----------------------------------------------------------------------------------
def _squares(n: int, size: int = 64, seed: int = 0):
    """Bright squares (class 0) and bars (class 1) on a dark background."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        image = np.full((size, size, 3), 30, np.uint8)
        boxes, labels = [], []
        for label, (w, h) in enumerate([(16, 16), (28, 10)]):
            x, y = rng.integers(4, size - w - 4), rng.integers(4, size // 2 - h) + (size // 2 if label else 0)
            image[y:y + h, x:x + w] = (230, 200, 40) if label == 0 else (40, 120, 230)
            boxes.append([x, y, x + w, y + h])
            labels.append(label)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
        targets.append(_target(boxes, labels))
    return torch.stack(images), targets


def test_centernet_overfits_a_few_images_until_decoding_finds_their_boxes():
    torch.manual_seed(0)
    images, targets = _squares(4)
    task = CenterNetTask(CenterNet(num_classes=2, neck_channels=(32, 32, 32)), lr=2e-3, one_cycle=False)
    optimizer = task.configure_optimizers()
    first = None
    for step in range(60):
        task.train()
        loss = task.training_step((images, targets))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first
    found = predict(task.model, images)
    assert mean_average_precision(found, targets)["map50"] > 0.9
    best = [f["boxes"][f["scores"].argmax()] for f in found]
    assert max(f["scores"].max().item() for f in found) > 0.3 and len(best) == 4


def test_flip_averaging_mirrors_the_second_pass_back_and_keeps_the_plain_offsets():
    def model(x):  # a map that is not mirror-symmetric: running sums along the width
        c = x.cumsum(-1)
        return {"heatmap": c[:, :1], "size": 2 * c[:, :2], "offset": c[:, 1:3]}

    x = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    out = flip_averaged(model, x)
    # by hand for one row: x = [0, 1, 2, 3] -> sums [0, 1, 3, 6]; mirrored [3, 2, 1, 0] -> [3, 5, 6, 6],
    # flipped back [6, 6, 5, 3]; average [3, 3.5, 4, 4.5]
    assert out["heatmap"][0, 0, 0].tolist() == [3.0, 3.5, 4.0, 4.5]
    assert torch.equal(out["size"], x.cumsum(-1)[:, :2] + x.flip(-1).cumsum(-1).flip(-1)[:, :2])
    assert torch.equal(out["offset"], x.cumsum(-1)[:, 1:3])
