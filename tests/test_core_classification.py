"""core pieces for image classification: scores against scikit-learn, the stratified split,
RGB conversion, decode-once with corrupt files, labelled folders and CSVs, predict with flip TTA."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score, precision_recall_fscore_support
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.data import (DataError, csv_label_items, decode_images, image_folder_items, read_rgb, stratified_split,
                       to_rgb)
from core.inference import count_parameters, model_outputs
from core.metrics import ClassificationMeter, classification_scores


# -- scores ---------------------------------------------------------------------------------------
def test_classification_scores_match_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))
    y_pred[y_pred == 4] = 3                                   # class 4 never predicted: precision 0
    scores = classification_scores(y_true, y_pred, 5)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    np.testing.assert_allclose(scores["precision"], p)
    np.testing.assert_allclose(scores["recall"], r)
    np.testing.assert_allclose(scores["f1"], f)
    np.testing.assert_array_equal(scores["support"], s)
    np.testing.assert_array_equal(scores["cm"], sk_confusion(y_true, y_pred, labels=range(5)))
    assert scores["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert scores["f1_micro"] == pytest.approx(f1_score(y_true, y_pred, average="micro"))
    assert scores["accuracy"] == pytest.approx((y_true == y_pred).mean())


def test_scores_by_hand():
    # truth a a b b c, predicted a b b b a: a: P 1/2 R 1/2; b: P 2/3 R 1; c: P 0 R 0
    scores = classification_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert scores["f1"].tolist() == pytest.approx([0.5, 0.8, 0.0])
    assert scores["f1_macro"] == pytest.approx(1.3 / 3)
    assert scores["accuracy"] == pytest.approx(3 / 5)


def test_meter_over_batches_equals_one_pass():
    torch.manual_seed(0)
    logits, target = torch.randn(50, 4), torch.randint(0, 4, (50,))
    meter = ClassificationMeter(4)
    for i in range(0, 50, 16):
        meter.update(logits[i:i + 16], target[i:i + 16])
    whole = classification_scores(target.numpy(), logits.argmax(1).numpy(), 4)
    got = meter.compute(reset=True)
    assert got["f1_macro"] == pytest.approx(whole["f1_macro"])
    assert got["accuracy"] == pytest.approx(whole["accuracy"])
    assert meter.cm.sum() == 0


# -- split ----------------------------------------------------------------------------------------
def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert np.bincount(labels[val]).tolist() == [10, 6, 4]
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)


def test_stratified_split_sends_single_image_classes_to_train():
    labels = np.array([0] * 10 + [1] * 10 + [2])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert 20 in train and 2 not in labels[val]


# -- images ---------------------------------------------------------------------------------------
def test_to_rgb_converts_grey_palette_and_alpha():
    grey = Image.fromarray(np.full((2, 2), 77, np.uint8))
    assert np.asarray(to_rgb(grey)).tolist() == [[[77] * 3] * 2] * 2
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)      # fully transparent red: the white background shows
    rgba[0, 1] = (0, 0, 255, 255)    # opaque blue
    assert np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))).tolist() == [[[255, 255, 255], [0, 0, 255]]]
    palette = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    palette.putpalette([10, 20, 30, 200, 100, 0] + [0] * 762)
    assert np.asarray(to_rgb(palette)).tolist() == [[[10, 20, 30], [200, 100, 0]]]


def _tree(root, counts: dict[str, int], size=(20, 16)):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")


def test_image_folder_and_csv_items(tmp_path):
    _tree(tmp_path / "train", {"b": 2, "a": 3})
    items = image_folder_items(tmp_path / "train")
    assert items.classes == ["a", "b"] and items.labels.tolist() == [0, 0, 0, 1, 1]
    (tmp_path / "train.csv").write_text("Id,Category\n0.jpg,b\n1.jpg,b\n2.jpg,a\n")
    rows = csv_label_items(tmp_path / "train.csv", tmp_path / "train")
    assert rows.classes == ["a", "b"] and rows.labels.tolist() == [1, 1, 0]
    assert rows.files[2] == tmp_path / "train" / "a" / "2.jpg"
    (tmp_path / "bad.csv").write_text("Id,Label\n0.jpg,b\n")
    with pytest.raises(DataError, match="missing column"):
        csv_label_items(tmp_path / "bad.csv", tmp_path / "train")


def test_decode_images_skips_and_counts_or_fails_on_corrupt_files(tmp_path):
    _tree(tmp_path, {"a": 2})
    broken = tmp_path / "a" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files = sorted((tmp_path / "a").iterdir())
    arrays, good, skipped = decode_images(files, size=8)
    assert len(arrays) == 2 and arrays[0].shape == (8, 8, 3)
    assert [p.name for p, _ in skipped] == ["broken.jpg"] and files[good[0]].name != "broken.jpg"
    with pytest.raises(DataError, match="broken.jpg"):
        decode_images(files, size=8, on_corrupt="error")
    assert read_rgb(files[good[0]]).shape == (16, 20, 3)


# -- predict --------------------------------------------------------------------------------------
def test_predict_tensor_and_loader_agree_and_flip_tta():
    torch.manual_seed(0)
    pooled = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(10, 3, 8, 8)
    plain = model_outputs(pooled, x, batch_size=4)
    via_loader = model_outputs(pooled, DataLoader(TensorDataset(x, torch.zeros(10)), batch_size=3))
    torch.testing.assert_close(plain, via_loader)
    # a 1x1 conv + global pooling does not see left from right: TTA changes nothing
    torch.testing.assert_close(model_outputs(pooled, x, tta_flip=True), plain)
    # a dense model's output is flipped back before averaging: a 1x1 conv is also unchanged
    dense = nn.Conv2d(3, 2, 1)
    torch.testing.assert_close(model_outputs(dense, x, tta_flip=True), model_outputs(dense, x))
    # a model that does see left from right: the average of both views
    asym = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    expected = (asym(x).softmax(1) + asym(x.flip(-1)).softmax(1)) / 2
    torch.testing.assert_close(model_outputs(asym, x, tta_flip=True, activation="softmax"), expected)
    assert count_parameters(asym) == 3 * 64 * 3 + 3
