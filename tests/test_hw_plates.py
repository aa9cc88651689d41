"""hw_plates: CTC decoding and loss against hand computations, the alphabet, the reading
metrics, a reader that must learn, data loading and bad input, and the commands end to end."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from core.data import DataError
from core.trainer import Trainer
from hw_plates.data import (BoxNoise, CropDataset, PhotoResolution, at_photo_resolution, grown, PhotoCutDataset, collate_crops, cut_plate, cut_rotated,
                            load_crops, load_photos, make_rendered_plates, noisy_cut, prepare_crop, split_of, to_input,
                            viewed)
from hw_plates.detect import PlateDetectionDataset, detect_plates, match_plates
from hw_plates.models import (CRNN, PlateNet, ReaderEnsemble, likeliest_texts, load_model, make_reader,
                              save_plate_model)
from hw_plates.refine import (BoxRefiner, EdgeNoise, RefineDataset, RefinerTask, collate_windows, cut_window,
                               edge_errors, from_window, refine_boxes, to_window, window_around)
from hw_plates.task import FIVE_VIEWS, ReaderTask, ctc_loss, read_crops
from hw_plates.text import (Alphabet, beam_decode, beam_decode_one, collapse, end_to_end_metrics, greedy_decode,
                            levenshtein, reading_metrics)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _frames(path: list[int], num_classes: int, confidence: float = 0.9) -> torch.Tensor:
    """(T, 1, C) log-probabilities whose most likely class in frame t is ``path[t]``."""
    probs = torch.full((len(path), num_classes), (1 - confidence) / (num_classes - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = confidence
    return probs.log()[:, None]


# -- CTC ------------------------------------------------------------------------------------------
def test_greedy_decoding_merges_repeats_and_drops_blanks():
    alphabet = Alphabet("ABC")  # A=1, B=2, C=3, blank=0
    # frames: A A - A B B - - C C -  ->  runs A, -, A, B, -, C, -  ->  "AABC"
    path = [1, 1, 0, 1, 2, 2, 0, 0, 3, 3, 0]
    assert collapse(path) == [1, 1, 2, 3]
    assert greedy_decode(_frames(path, 4), alphabet) == ["AABC"]
    assert greedy_decode(_frames([0, 0, 0], 4), alphabet) == [""]
    assert greedy_decode(_frames([2, 2, 2, 2], 4), alphabet) == ["B"]  # a repeat without a blank is one B


def test_ctc_loss_equals_the_hand_computed_two_frame_probability():
    model = CRNN("AB", channels=4, hidden=4)
    # two frames over (blank, A, B)
    p = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    logits = p.log()[:, None]                                      # log-softmax of log p is log p
    # "A": the paths A-, -A, AA;  "AB": only the path AB, and the mean divides by its 2 characters
    p_a = p[0, 1] * p[1, 0] + p[0, 0] * p[1, 1] + p[0, 1] * p[1, 1]
    assert ctc_loss(logits, ["A"], model).item() == pytest.approx(-math.log(p_a), rel=1e-5)
    assert ctc_loss(logits, ["AB"], model).item() == pytest.approx(-math.log(p[0, 1] * p[1, 2]) / 2, rel=1e-5)
    # a batch of both: the mean of the per-text values
    both = ctc_loss(torch.cat([logits, logits], 1), ["A", "AB"], model).item()
    assert both == pytest.approx((-math.log(p_a) - math.log(p[0, 1] * p[1, 2]) / 2) / 2, rel=1e-5)


def test_beam_search_finds_the_most_probable_text_that_greedy_misses():
    # each frame: blank 0.6, A 0.4. Greedy reads "" (path "--", 0.36); "A" has AA+A-+-A = 0.64
    lp = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(torch.from_numpy(lp)[:, None], Alphabet("A")) == [""]
    assert beam_decode_one(lp, beam_width=4) == [1]


def test_beam_search_matches_brute_force_over_every_path():
    rng = np.random.default_rng(0)
    for _ in range(5):
        probs = rng.dirichlet(np.ones(3), size=5)                  # T=5 frames, blank + 2 symbols
        totals: dict[tuple, float] = {}
        for path in itertools.product(range(3), repeat=5):
            label = tuple(collapse(path))
            totals[label] = totals.get(label, 0.0) + float(np.prod(probs[np.arange(5), path]))
        best = max(totals, key=totals.get)
        assert beam_decode_one(np.log(probs), beam_width=50, prune=-1e9) == list(best)
    batch = torch.from_numpy(np.log(probs))[:, None].float()
    assert beam_decode(batch, Alphabet("AB"), beam_width=50) == [Alphabet("AB").decode(best)]


def test_alphabet_round_trip_and_unknown_characters():
    alphabet = Alphabet()
    assert alphabet.num_classes == 37
    assert alphabet.decode(alphabet.encode(alphabet.chars)) == alphabet.chars
    assert alphabet.encode("A0") == [11, 1]
    assert Alphabet.from_tensor(alphabet.to_tensor()).chars == alphabet.chars
    targets, lengths = alphabet.encode_batch(["AB", "9"])
    assert targets.tolist() == [11, 12, 10] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="'-'"):
        alphabet.encode("RK-619")
    with pytest.raises(ValueError, match="repeats"):
        Alphabet("ABA")


def test_the_alphabet_travels_with_the_saved_reader(tmp_path):
    from core.errors import UserError
    from hw_plates.predict import load_predictor

    (tmp_path / "args.json").write_text('{"homework": "hw_plates"}')
    model = CRNN("XYZ0", channels=4, hidden=8, width=64).eval()
    save_plate_model(tmp_path, reader=model,
                     reader_config={"arch": "crnn_small", "height": 32, "width": 64, "channels": 4, "hidden": 8})
    loaded = load_model(tmp_path)
    reader = loaded.model.reader
    assert reader.alphabet.chars == "XYZ0" and reader.input_size == (32, 64) and not reader.training
    assert loaded.model.detector is None and loaded.model.parts == loaded.extras["parts"] == ["reader"]
    assert loaded.extras["alphabet"] == "XYZ0" and loaded.extras["detection"] is None
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reader(x))
    assert model(x).shape == (16, 2, 5)                               # W/4 frames, 4 characters + blank
    with pytest.raises(UserError, match=r"needs a detector, and this run has only a reader \(trained with "
                                        r"--stage read\): train with --stage detect or --stage both"):
        loaded.model.require("detector", "reading photos")
    # a run with a detector only cannot read: predict says so in one line
    (tmp_path / "model.pt").unlink()
    save_plate_model(tmp_path, detector=PlateNet(4), detector_config={"width": 4},
                     detection={"size": 64, "margin": 0.0, "score_threshold": 0.3})
    loaded = load_model(tmp_path)
    assert loaded.model.parts == ["detector"] and loaded.extras["alphabet"] is None
    with pytest.raises(UserError, match=r"needs a reader, and this run has only a detector \(trained with "
                                        r"--stage detect\)"):
        load_predictor(tmp_path)


# -- metrics ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b, distance", [
    ("kitten", "sitting", 3), ("", "ABC", 3), ("ABC", "", 3), ("ABC", "ABC", 0), ("AB", "BA", 2),
    ("RK099AN", "RK0S9AN", 1), ("ABC123", "AC1234", 2), ("0UTFR0NT", "OUTFRONT", 2)])
def test_levenshtein_on_hand_cases(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


def test_reading_metrics_on_hand_cases():
    scores = reading_metrics(["ABC", "AXC", ""], ["ABC", "ABCD", "XY"])
    # edits 0, 2 (B->X, +D), 2; true characters 3 + 4 + 2 = 9
    assert scores == pytest.approx({"exact": 1 / 3, "cer": 4 / 9, "mean_levenshtein": 4 / 3})
    with pytest.raises(ValueError):
        reading_metrics(["A"], ["A", "B"])


def test_end_to_end_metrics_on_a_hand_built_prediction_set():
    truths = [["AB123"], ["XY99", "K1"], ["ZZZ1"]]
    reads = [["AB123"], ["XY90", ""], ["ZZZ1"]]     # photo 2: one substitution, one plate not found
    scores = end_to_end_metrics(truths, reads)
    # plates read whole: 2 of 4; edits per photo 0, 1 + 2, 0; true characters 5 + 4 + 2 + 4
    assert scores == pytest.approx({"e2e_exact": 0.5, "e2e_levenshtein": 1.0, "e2e_cer": 3 / 15})
    with pytest.raises(ValueError):
        end_to_end_metrics(truths, reads[:2])


def test_each_true_plate_gets_the_best_free_detection_that_overlaps_it():
    true_boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=np.float32)
    detections = {"boxes": torch.tensor([[21, 0, 31, 10], [0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]],
                                        dtype=torch.float32),
                  "scores": torch.tensor([0.9, 0.5, 0.8, 0.95])}
    # by score: #3 overlaps nothing, #0 takes plate 1, #2 takes plate 0 (IoU 9/11), #1 finds plate 0 taken
    assert match_plates(true_boxes, detections) == [2, 0]
    assert match_plates(true_boxes, detections, score_threshold=0.85) == [None, 0]
    assert match_plates(true_boxes, detections, iou_threshold=0.95) == [1, None]


# -- the reader learns -----------------------------------------------------------------------------
def test_reader_overfits_twenty_rendered_crops_to_exact_one():
    crops, _ = make_rendered_plates(20, 0, Alphabet(), 32, 96, seed=0)
    loader = DataLoader(CropDataset(crops), batch_size=10, shuffle=True, collate_fn=collate_crops)
    torch.manual_seed(0)
    model = CRNN(Alphabet(), channels=8, hidden=32)
    task = ReaderTask(model, lr=5e-3)
    history = Trainer(max_epochs=60, monitor=None, progress=False, log_every_epoch=False, seed=0).fit(task, loader)
    assert history[-1]["train_loss"] < 0.3 * history[5]["train_loss"]
    images = torch.stack([CropDataset(crops)[i][0] for i in range(20)])
    readings = read_crops(model, images)
    assert reading_metrics(readings, crops.texts)["exact"] == 1.0
    assert read_crops(model, images, beam_width=4) == readings          # a confident model: beam = greedy


def test_detector_finds_the_plates_of_a_few_photos_it_overfits():
    from core.detection.data import collate
    from core.detection.centernet import CenterNetTask
    from core.detection.evaluate import mean_average_precision

    _, photos = make_rendered_plates(0, 6, Alphabet(), 32, 128, seed=1)
    loader = DataLoader(PlateDetectionDataset(photos, 128), batch_size=6, collate_fn=collate)
    torch.manual_seed(0)
    model = PlateNet(width=8)
    task = CenterNetTask(model, lr=1e-2, topk=5)
    Trainer(max_epochs=80, monitor=None, progress=False, log_every_epoch=False, seed=0).fit(task, loader)
    found = detect_plates(model, [p.image for p in photos], size=128, topk=5)
    targets = [{"boxes": torch.as_tensor(p.boxes), "labels": torch.zeros(1, dtype=torch.long)} for p in photos]
    assert mean_average_precision(found, targets)["map50"] >= 0.9
    assert all(match_plates(p.boxes, f, score_threshold=0.3, iou_threshold=0.5) == [0] for p, f in zip(photos, found))


# -- box refiner -----------------------------------------------------------------------------------
def test_a_window_maps_a_box_to_its_units_and_back_and_repeats_the_border_outside_the_photo():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:, :30] = 200                                         # left half light, right half dark
    box = [10.0, 15.0, 30.0, 25.0]
    assert window_around(box, (2.0, 3.0)) == [0.0, 5.0, 40.0, 35.0]
    pixels, corners = cut_window(image, box, (2.0, 3.0), (30, 40))
    assert pixels.shape == (30, 40, 3) and corners == [0, 5, 40, 35]
    assert to_window(box, corners) == [0.25, 1 / 3, 0.75, 2 / 3]
    assert from_window(to_window(box, corners), corners) == pytest.approx(box)
    assert (pixels[:, :29] == 200).all() and (pixels[:, 31:] == 0).all()     # 1 px per window pixel here
    # a box at the photo's top-left corner: the window reaches outside and repeats the border
    pixels, corners = cut_window(image, [0.0, 0.0, 10.0, 10.0], (3.0, 3.0), (30, 30))
    assert corners == [-10, -10, 20, 20] and (pixels == 200).all()
    pixels, corners = cut_window(image, [50.0, 30.0, 60.0, 40.0], (3.0, 3.0), (30, 30))
    assert corners == [40, 20, 70, 50] and (pixels == 0).all()


def test_an_untrained_refiner_keeps_each_box_and_zero_rounds_change_nothing():
    refiner = BoxRefiner(width=4).eval()                         # its last layer starts at zero
    image = np.random.default_rng(0).integers(0, 255, (120, 200, 3), dtype=np.uint8)
    boxes = [[20.0, 30.0, 80.0, 50.0], [100.5, 60.2, 150.7, 75.9]]
    assert refine_boxes(refiner, image, boxes, rounds=0) == boxes
    for refined, box in zip(refine_boxes(refiner, image, boxes, rounds=2), boxes):
        assert refined == pytest.approx(box, abs=1.0)        # up to the window's rounding to whole pixels
    with pytest.raises(ValueError, match="multiples of 16"):
        BoxRefiner(input_size=(30, 128))
    with pytest.raises(ValueError, match="larger than the box"):
        BoxRefiner(window=(1.0, 2.0))


def test_refine_windows_are_fixed_in_validation_fresh_in_training_and_mirror_with_their_edges():
    _, photos = make_rendered_plates(0, 4, Alphabet(), 32, 128, seed=3)
    refiner = BoxRefiner(width=4)
    val = RefineDataset(photos, refiner, repeats=2, seed=7)
    assert len(val) == 8
    (a, ta), (b, tb) = val[1], val[1]
    assert torch.equal(a, b) and torch.equal(ta, tb) and a.shape == (3, 32, 128)
    exact = RefineDataset(photos, refiner, noise=EdgeNoise(0.0, 0.0, 0.0))
    for i in range(4):
        assert exact[i][1].tolist() == pytest.approx(refiner.start.tolist(), abs=0.02)   # the box in the middle
    torch.manual_seed(0)
    train = RefineDataset(photos, refiner, augment=True)
    draws = [train[0][1] for _ in range(6)]
    assert len({tuple(t.tolist()) for t in draws}) == 6
    for t in draws:                                           # edges stay ordered, mirrored or not
        assert t[0] < t[2] and t[1] < t[3]
    images, targets = collate_windows([train[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 128) and targets.shape == (4, 4)
    # an edge error in plate units: half a plate width off on the left, nothing else
    truth = torch.tensor([[0.2, 0.3, 0.6, 0.7]])
    assert edge_errors(torch.tensor([[0.0, 0.3, 0.6, 0.7]]), truth).item() == pytest.approx(0.5 / 4)


def test_a_trained_refiner_brings_noisy_boxes_closer_to_unseen_plates():
    _, photos = make_rendered_plates(0, 48, Alphabet(), 32, 128, seed=11)
    train_photos, test_photos = photos[:40], photos[40:]
    torch.manual_seed(0)
    refiner = BoxRefiner(width=8)
    loader = DataLoader(RefineDataset(train_photos, refiner, augment=True, repeats=8), batch_size=32, shuffle=True,
                        collate_fn=collate_windows)
    Trainer(max_epochs=12, monitor=None, progress=False, log_every_epoch=False, seed=0).fit(RefinerTask(refiner), loader)
    rng, before, after = np.random.default_rng(1), [], []
    for photo in test_photos * 4:                                # boxes off by about a tenth, around unseen plates
        truth = photo.boxes[0].tolist()
        scale = [truth[2] - truth[0], truth[3] - truth[1]] * 2
        box = list(np.add(truth, np.clip(rng.normal(0.0, 0.1, 4), -0.3, 0.3) * scale))
        (refined,) = refine_boxes(refiner.eval(), photo.image, [box], rounds=2)
        before.append(np.mean([abs(b - t) / s for b, t, s in zip(box, truth, scale)]))
        after.append(np.mean([abs(b - t) / s for b, t, s in zip(refined, truth, scale)]))
    assert np.mean(before) > 0.05
    assert np.mean(after) < 0.6 * np.mean(before)


# -- data ------------------------------------------------------------------------------------------
def test_split_is_by_text_stable_and_about_70_10_20():
    assert split_of("RK099AN") == split_of("RK099AN")
    counts = {s: 0 for s in ("train", "val", "test")}
    for i in range(5000):
        counts[split_of(f"P{i:05d}")] += 1
    assert counts["test"] == pytest.approx(1000, abs=100) and counts["val"] == pytest.approx(500, abs=80)


def _jpeg(path, size=(60, 20), color=(200, 200, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _plates_tree(root, labels="file,text,region\na.jpg,AB123,eu\nb.jpg,XY99,us\n", photos=None):
    for name in ("a.jpg", "b.jpg"):
        _jpeg(root / "recognition" / "images" / name)
    (root / "recognition" / "labels.csv").write_text(labels)
    _jpeg(root / "detection" / "images" / "car.jpg", size=(100, 80))
    photos = photos if photos is not None else [
        {"file": "car.jpg", "width": 100, "height": 80, "plates": [{"box": [10, 40, 70, 60], "text": "AB123"}]}]
    (root / "detection" / "annotations.json").write_text(json.dumps(photos))
    return root


def test_a_small_plates_tree_loads(tmp_path):
    root = _plates_tree(tmp_path)
    crops = load_crops(root, Alphabet(), 32, 128)
    assert crops.texts == ["AB123", "XY99"] and crops.images[0].shape == (64, 256, 3)
    photos = load_photos(root, Alphabet())
    assert photos[0].texts == ["AB123"] and photos[0].boxes.tolist() == [[10, 40, 70, 60]]
    assert photos[0].load().shape == (80, 100, 3)
    assert photos[0].split == split_of("AB123")
    # the cut widens the box by margin x its height (20 px) on every side, clipped to the photo
    assert cut_plate(photos[0].load(), photos[0].boxes[0], margin=0.25).shape == (30, 70, 3)
    assert cut_plate(photos[0].load(), photos[0].boxes[0], margin=2.0).shape == (80, 100, 3)


def test_a_label_outside_the_alphabet_is_named_with_its_file(tmp_path):
    root = _plates_tree(tmp_path, labels="file,text,region\na.jpg,AB123,eu\nb.jpg,RK-619,eu\n")
    with pytest.raises(DataError, match=r"line 3: text 'RK-619' of b\.jpg has character\(s\) '-'"):
        load_crops(root, Alphabet(), 32, 128)


def test_an_empty_crop_or_text_is_named(tmp_path):
    root = _plates_tree(tmp_path)
    _jpeg(root / "recognition" / "images" / "b.jpg", size=(1, 1))
    with pytest.raises(DataError, match=r"b\.jpg: crop of shape \(1, 1, 3\) is empty or too small"):
        load_crops(root, Alphabet(), 32, 128)
    root = _plates_tree(tmp_path / "t2", labels="file,text,region\na.jpg,,eu\n")
    with pytest.raises(DataError, match=r"line 2: empty text for a\.jpg"):
        load_crops(root, Alphabet(), 32, 128)
    (root / "recognition" / "labels.csv").write_text("name,text\na.jpg,AB1\n")
    with pytest.raises(DataError, match="missing column"):
        load_crops(root, Alphabet(), 32, 128)


def test_a_box_outside_its_photo_is_named(tmp_path):
    root = _plates_tree(tmp_path, photos=[
        {"file": "car.jpg", "width": 100, "height": 80, "plates": [{"box": [50, 40, 120, 60], "text": "AB1"}]}])
    with pytest.raises(DataError, match=r"car\.jpg: box \[50, 40, 120, 60\] is empty or not inside the 100x80"):
        load_photos(root)


def test_a_photo_without_annotation_is_named(tmp_path, capsys):
    root = _plates_tree(tmp_path, photos=[{"file": "car.jpg", "width": 100, "height": 80}])
    with pytest.raises(DataError, match=r"car\.jpg: no 'plates' list \(a photo without annotation\)"):
        load_photos(root)
    root = _plates_tree(tmp_path / "t2")
    _jpeg(root / "detection" / "images" / "extra.jpg")
    capsys.readouterr()
    assert len(load_photos(root)) == 1
    out = capsys.readouterr().out
    assert "1 image(s)" in out and "not used (first: extra.jpg)" in out


# -- commands --------------------------------------------------------------------------------------
def test_a_cut_turned_half_a_turn_is_the_plain_cut_mirrored_both_ways():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    box = (40.0, 50.0, 120.0, 74.0)
    plain = cut_rotated(photo, box, 16, 64)
    # the straight cut is the box resized, as the pipeline cuts it (prepare_crop of cut_plate)
    assert plain.shape == (32, 128, 3)
    assert np.abs(plain.astype(int) - prepare_crop(cut_plate(photo, box), 16, 64)).mean() < 3
    turned = cut_rotated(photo, box, 16, 64, angle=180.0)
    assert np.abs(turned.astype(int) - plain[::-1, ::-1]).max() <= 1
    # no noise: the noisy cut is the plain one
    still = BoxNoise(shift_x=0, shift_y=0, scale=(1, 1), aspect=0, rotate=0)
    assert np.array_equal(noisy_cut(photo, box, 16, 64, rng, still), plain)


def test_photo_cuts_are_fixed_in_validation_and_fresh_in_training():
    _, photos = make_rendered_plates(0, 3, Alphabet(), 32, 64, seed=2)
    val = PhotoCutDataset(photos, 32, 64, seed=1, repeats=2)
    assert len(val) == 6 and [val[i][1] for i in range(6)] == [p.texts[0] for p in photos] * 2
    first, again = val[0][0], val[0][0]
    assert first.shape == (3, 32, 64) and torch.equal(first, again)
    assert not torch.equal(val[0][0], val[3][0])                                  # repeats draw their own noise
    exact = PhotoCutDataset(photos, 32, 64, noise=None)
    expected = to_input(prepare_crop(cut_plate(photos[1].image, photos[1].boxes[0]), 32, 64))
    assert torch.equal(exact[1][0], expected)
    assert grown([10, 20, 50, 30], 0.5) == [5, 15, 55, 35]                        # half the height on every side
    wide = PhotoCutDataset(photos, 32, 64, noise=None, margin=0.3)                 # as the pipeline cuts with --margin
    expected = to_input(prepare_crop(cut_plate(photos[1].image, photos[1].boxes[0], 0.3), 32, 64))
    assert torch.equal(wide[1][0], expected) and not torch.equal(wide[1][0], exact[1][0])
    train = PhotoCutDataset(photos, 32, 64, augment=True)
    torch.manual_seed(0)
    a = train[0][0]
    torch.manual_seed(0)
    assert torch.equal(a, train[0][0]) and not torch.equal(a, train[0][0])


def test_photo_resolution_keeps_the_size_and_loses_what_a_small_plate_cannot_hold():
    stripes = np.zeros((64, 256, 3), np.uint8)
    stripes[:, ::2] = 255                                      # 1-px columns: gone at any smaller width
    spec = PhotoResolution(width=(40, 40), aspect=(0.5, 0.5), quality=(95, 95))
    out = at_photo_resolution(stripes, np.random.default_rng(0), spec)
    assert out.shape == stripes.shape and out.dtype == np.uint8
    assert abs(float(out.mean()) - 127.5) < 6 and float(out.std()) < 10     # grey: the stripes averaged away
    bars = np.zeros((64, 256, 3), np.uint8)
    bars[:, 128:] = 255                                        # one edge: survives 40 px
    kept = at_photo_resolution(bars, np.random.default_rng(0), spec)
    assert kept[:, :100].max() < 40 and kept[:, 156:].min() > 215
    large = PhotoResolution(width=(300, 300), aspect=(0.5, 0.5))
    assert np.array_equal(at_photo_resolution(stripes, np.random.default_rng(0), large), stripes)


def test_crop_dataset_brings_the_low_res_share_down_and_repeats_with_the_seed():
    crops, _ = make_rendered_plates(4, 0, Alphabet(), 32, 128, seed=3)
    with pytest.raises(ValueError, match="low_res must be a probability"):
        CropDataset(crops, augment=True, low_res=1.5)
    sharp, blurred = CropDataset(crops), CropDataset(crops, augment=True, low_res=1.0, seed=0)
    blurred.transform = lambda image: {"image": image}         # the shrinking alone
    detail = lambda x: float((x[:, :, 1:] - x[:, :, :-1]).abs().mean())
    torch.manual_seed(0)
    low = [blurred[i][0] for i in range(4)]
    assert all(detail(l) < detail(sharp[i][0]) for i, l in enumerate(low))
    torch.manual_seed(0)
    assert all(torch.equal(l, blurred[i][0]) for i, l in enumerate(low))
    assert [blurred[i][1] for i in range(4)] == crops.texts


class EdgeReader(torch.nn.Module):
    """A stand-in reader that reads "AB" when its cut's left column is dark (the cut reaches past
    the plate's left end, so the first character is in it) and "B" when it is not."""

    read, log_probs = CRNN.read, CRNN.log_probs

    def __init__(self, alphabet: Alphabet):
        super().__init__()
        self.input_size, self.alphabet, self.formats = (32, 64), alphabet, None

    def forward(self, images):
        dark_left = images[:, :, :, 0].mean(dim=(1, 2)) < 0.5
        return torch.cat([peaks(self.alphabet, "A-B---" if dark else "B-----") for dark in dark_left], dim=1)


def test_reading_in_views_keeps_the_text_likeliest_over_all_cuts():
    from hw_plates.task import read_boxes

    image = np.zeros((40, 120, 3), dtype=np.uint8)
    image[10:30, 20:100] = 255                                    # a white plate on black
    clipped = [30.0, 10.0, 100.0, 30.0]                           # the box ends inside its first character
    reader = EdgeReader(Alphabet())
    assert read_boxes(reader, image, [clipped]) == ["B"]          # the box as found
    # four of five cuts reach past the plate's left end (widened, moved left, ...); their text wins
    views = [(0.0, 0.0, 0.0, 0.0), (0.3, 0.0, 0.0, 0.0), (0.2, 0.2, 0.0, 0.0), (0.2, 0.0, 0.2, 0.2), (0.25, -0.1, 0, 0)]
    assert read_boxes(reader, image, [clipped, [10.0, 10.0, 100.0, 30.0]], views=views) == ["AB", "AB"]
    assert read_boxes(reader, image, [clipped], views=[views[0], views[1], (0.0, 0.0, 0.2, 0.2)]) == ["B"]  # 1 in 3
    assert read_boxes(reader, image, []) == []
    # a real reader: every view of every box is a source of the likelihood, box by box
    torch.manual_seed(0)
    crnn = CRNN(Alphabet(), channels=4, hidden=8, width=64).eval()
    _, photos = make_rendered_plates(0, 2, Alphabet(), 32, 64, seed=3)
    boxes = [photos[0].boxes[0], photos[0].boxes[0] * np.array([1.0, 1.0, 0.9, 1.0])]
    cut = lambda box, view: to_input(prepare_crop(cut_plate(photos[0].image, viewed(box, view)), 32, 64))
    with torch.no_grad():
        expected = [likeliest_texts(torch.cat([crnn.log_probs(cut(box, view)[None]) for view in FIVE_VIEWS]),
                                    crnn.alphabet)[0][0] for box in boxes]
    assert read_boxes(crnn, photos[0].image, boxes, views=FIVE_VIEWS) == expected
    assert read_boxes(crnn, photos[0].image, boxes[:1]) == read_crops(crnn, cut(boxes[0], (0, 0, 0, 0))[None])
    assert viewed([10, 20, 30, 30], (0.5, -0.25, 1.0, 0.0)) == [0.0, 10.0, 25.0, 30.0]


TINY = ["--n-rendered", "40", "--epochs", "1", "--channels", "4", "--hidden", "8", "--width", "64",
        "--n-scenes", "20", "--det-epochs", "1", "--det-size", "64", "--det-width", "4", "--refine-epochs", "1"]


def test_train_evaluate_predict_on_rendered_plates(runs_root, monkeypatch, tmp_path, capsys):
    from hw_plates import evaluate, predict, train

    monkeypatch.delenv("DLS_DATA", raising=False)
    metrics = train.main(TINY + ["--stage", "read", "--run-name", "tiny"])
    run = runs_root / "hw_plates" / "tiny"
    out = capsys.readouterr().out
    assert "data: built-in rendered plates" in out and "split by plate text" in out
    for name in ("args.json", "metrics.json", "model.pt", "reader/history.csv", "reader/best.pt",
                 "plots/reader_history.png", "plots/worst_readings.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_crops"] == metrics["test_crops"] > 0 and 0 <= saved["test_cer"]

    scores = evaluate.main(["--run", str(run), "--n-rendered", "20", "--split", "all", "--beam-width", "3"])
    evaluate.main(["--run", str(run), "--n-rendered", "20", "--split", "all"])
    evals = sorted(run.glob("eval-*"))
    assert scores["crops"] == 20 and len(evals) == 2                           # a second run: a new folder
    assert all((e / "readings.csv").is_file() and (e / "metrics.json").is_file() for e in evals)

    crops, _ = make_rendered_plates(2, 0, Alphabet(), 32, 64, seed=1)
    paths = []
    for i, image in enumerate(crops.images):
        paths.append(tmp_path / f"plate{i}.png")
        Image.fromarray(image).save(paths[-1])
    predict.main(["--run", str(run), *map(str, paths), "--run-dir", str(tmp_path / "pred")])
    results = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert set(results) == set(map(str, paths))
    for path in paths:  # a reader-only run reads the whole image as one plate
        (plate,) = results[str(path)]["boxes"]
        image = Image.open(path)
        assert plate["box"] == [0, 0, image.width, image.height]
        reader = load_model(run).model.reader
        x = to_input(prepare_crop(np.asarray(image.convert("RGB")), *reader.input_size))[None]
        assert plate["label"] == read_crops(reader, x)[0]
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2


def test_both_stages_on_rendered_plates_score_the_photos_end_to_end(runs_root, monkeypatch, tmp_path):
    from hw_plates import evaluate, predict, train

    monkeypatch.delenv("DLS_DATA", raising=False)
    metrics = train.main(TINY + ["--run-name", "both"])
    run = runs_root / "hw_plates" / "both"
    for name in ("detector/history.csv", "detector/best.pt", "plots/detector_history.png", "plots/worst_photos.png"):
        assert (run / name).is_file(), name
    for key in ("test_exact", "test_cer", "test_map50", "test_e2e_exact", "test_e2e_levenshtein", "test_e2e_missed"):
        assert key in metrics, key
    # every test plate is either read (its edits counted) or missed (all its characters counted)
    assert 0 <= metrics["test_e2e_missed"] <= metrics["test_photos"]
    scores = evaluate.main(["--run", str(run), "--n-rendered", "12", "--split", "all"])
    assert scores["photos"] == 12 and "e2e_exact" in scores and "map50" in scores
    (folder,) = run.glob("eval-*")
    photos, plates = pd.read_csv(folder / "photos.csv"), pd.read_csv(folder / "plates.csv")
    assert len(photos) == len(plates) == 12 and (folder / "plots" / "worst_photos.png").is_file()
    assert (photos["found"].sum(), photos["missed"].sum()) == (scores["e2e_found"], scores["e2e_missed"])
    assert photos["misread"].sum() == scores["e2e_misread"] == (plates["found"] & (plates["edits"] > 0)).sum()
    assert photos["edits"].mean() == pytest.approx(scores["e2e_levenshtein"], abs=1e-4)

    _, scenes = make_rendered_plates(0, 1, Alphabet(), 32, 64, seed=5)
    Image.fromarray(scenes[0].image).save(tmp_path / "scene.png")
    predict.main(["--run", str(run), str(tmp_path / "scene.png"), "--run-dir", str(tmp_path / "pred")])
    (result,) = json.loads((tmp_path / "pred" / "predictions.json").read_text()).values()
    loaded = load_model(run)
    boxes, scores, texts = predict.read_photo(scenes[0].image, loaded.model.reader, loaded.model.detector,
                                              loaded.extras["detection"])
    assert [b["label"] for b in result["boxes"]] == [texts[i] for i in np.argsort(-scores, kind="stable")]


class FixedReader(torch.nn.Module):
    """A stand-in reader whose frame scores are given (T, 1, C), whatever the images."""

    def __init__(self, logits: torch.Tensor, alphabet: Alphabet):
        super().__init__()
        self.logits, self.input_size, self.alphabet = logits, (32, 64), alphabet

    def forward(self, images):
        return self.logits.expand(-1, len(images), -1)


def peaks(alphabet: Alphabet, frames: str, strength: float = 6.0) -> torch.Tensor:
    """Frame scores with one confident symbol per frame (``-`` the blank)."""
    logits = torch.zeros(len(frames), 1, alphabet.num_classes)
    for t, c in enumerate(frames):
        logits[t, 0, 0 if c == "-" else alphabet.encode(c)[0]] = strength
    return logits


def test_an_ensemble_keeps_the_text_its_readers_find_most_likely_wherever_their_peaks_are():
    alphabet = Alphabet()
    early, late = FixedReader(peaks(alphabet, "A-B---"), alphabet), FixedReader(peaks(alphabet, "-A-B--"), alphabet)
    images = torch.rand(2, 3, 32, 64)
    mean = torch.stack([early(images).softmax(-1), late(images).softmax(-1)]).mean(0)
    assert greedy_decode(mean.log(), alphabet) == ["", ""]                    # averaged frames lose both letters
    ensemble = ReaderEnsemble([early, late])
    texts, scores = likeliest_texts(ensemble(images), alphabet)
    assert texts == ["AB", "AB"] and ensemble.read(images) == texts and ensemble(images).shape == (2, 6, 2, 37)
    lp = ensemble(images)[:, :, :1]                                             # the score: mean log-likelihood / frames
    nll = [torch.nn.functional.ctc_loss(lp[m], torch.tensor([[alphabet.encode("A")[0], alphabet.encode("B")[0]]]),
                                        [6], [2], reduction="sum") for m in range(2)]
    assert float(scores[0]) == pytest.approx(-float(sum(nll)) / 2 / 6, abs=1e-5)
    unsure = FixedReader(peaks(alphabet, "A-R---", strength=1.5), alphabet)   # a weak reader's other text loses
    assert ReaderEnsemble([early, unsure]).read(images[:1]) == ["AB"]
    assert read_crops(ensemble, images) == ["AB", "AB"]
    members = [CRNN(alphabet, channels=4, hidden=8, width=64) for _ in range(2)]
    assert make_reader(members[:1]) is members[0] and ReaderEnsemble(members).input_size == (32, 64)
    with pytest.raises(ValueError, match="at least 2 readers"):
        ReaderEnsemble(members[:1])
    with pytest.raises(ValueError, match="share their alphabet and input size"):
        ReaderEnsemble([members[0], CRNN(Alphabet("0123456789"), channels=4, hidden=8, width=64)])


def test_readers_2_trains_two_seeds_and_saves_them_as_one_ensemble(runs_root, monkeypatch, tmp_path):
    import hw_plates
    from core.checkpoint import load_checkpoint
    from core.inference import count_parameters
    from hw_plates import train
    from hw_plates.scoring import crop_metrics

    monkeypatch.delenv("DLS_DATA", raising=False)
    run = tmp_path / "run"
    metrics = train.main(TINY + ["--stage", "read", "--readers", "2", "--run-dir", str(run)])
    loaded = hw_plates.load_model(run)
    reader = loaded.model.reader
    assert isinstance(reader, ReaderEnsemble) and loaded.config["reader"]["members"] == 2
    assert metrics["reader_epochs"] == 2 and metrics["reader_parameters"] == 2 * count_parameters(reader.members[0])
    tasks = [ReaderTask(CRNN(Alphabet(), channels=4, hidden=8, width=64)) for _ in range(2)]
    for task, folder in zip(tasks, ("reader", "reader2")):
        load_checkpoint(run / folder / "best.pt", task)
    x = torch.rand(3, 3, 32, 64)
    with torch.no_grad():
        a, b = (task.model.eval()(x).log_softmax(-1) for task in tasks)
        assert not torch.allclose(a, b)                                           # two seeds, two readers
        assert torch.allclose(reader(x), torch.stack([a, b]), atol=1e-6)
    crops, _ = make_rendered_plates(40, 0, Alphabet(), 32, 64, seed=42)           # the run's data (seed 42)
    assert crop_metrics(reader, crops.split("test"))[0]["exact"] == metrics["test_exact"]


def test_load_model_gives_the_selected_weights_and_the_run_test_scores(runs_root, monkeypatch, tmp_path):
    import hw_plates
    from core.checkpoint import load_checkpoint
    from core.detection.centernet import CenterNetTask
    from core.errors import UserError
    from hw_plates import evaluate, train
    from hw_plates.scoring import crop_metrics, cut_metrics, detector_metrics, end_to_end

    monkeypatch.delenv("DLS_DATA", raising=False)
    run = tmp_path / "run"
    metrics = train.main(TINY + ["--det-epochs", "2", "--run-dir", str(run)])
    loaded = hw_plates.load_model(run)
    assert (loaded.homework, loaded.kind, loaded.model.parts) == ("hw_plates", "detection", ["reader", "detector"])
    formats = loaded.config["reader"].pop("formats")                       # the built-in recipe: weight 0
    assert (formats["weight"], formats["min_count"]) == (0.0, 2) and sum(formats["counts"].values()) > 0
    assert loaded.config == {"reader": {"arch": "crnn_small", "height": 32, "width": 64, "channels": 4, "hidden": 8,
                                        "members": 1}, "detector": {"width": 4},
                             "refiner": {"width": 16, "window": [1.8, 2.6], "input_size": [32, 128]}}
    assert loaded.extras == {"parts": ["reader", "detector"], "alphabet": Alphabet().chars,
                             "detection": {"size": 64, "margin": 0.0, "score_threshold": 0.3, "flip": True,
                                           "views": [list(v) for v in FIVE_VIEWS], "refine_rounds": 2}}
    assert not loaded.model.training and loaded.metrics == metrics and loaded.settings["stage"] == "both"
    # the weights are each stage's best epoch (--select best)
    reader_task, detector_task = ReaderTask(CRNN(Alphabet(), channels=4, hidden=8, width=64)), CenterNetTask(PlateNet(4))
    load_checkpoint(run / "reader" / "best.pt", reader_task)
    load_checkpoint(run / "detector" / "best.pt", detector_task)
    refiner_task = RefinerTask(BoxRefiner())
    load_checkpoint(run / "refiner" / "best.pt", refiner_task)
    with torch.no_grad():
        crops_in, photos_in, windows_in = torch.rand(3, 3, 32, 64), torch.rand(2, 3, 64, 64), torch.rand(2, 3, 32, 128)
        assert torch.equal(loaded.model.reader(crops_in), reader_task.model.eval()(crops_in))
        ours, theirs = loaded.model.detector(photos_in), detector_task.model.eval()(photos_in)
        assert all(torch.equal(ours[key], theirs[key]) for key in ("heatmap", "size", "offset"))
        assert torch.equal(loaded.model.refiner(windows_in), refiner_task.model.eval()(windows_in))
    # the held-out plates scored through the loaded parts: the run's own test figures
    crops, photos = make_rendered_plates(40, 20, Alphabet(), 32, 64, seed=42)    # the run's data (seed 42)
    test_photos = [p for p in photos if p.split == "test"]
    scores = {**crop_metrics(loaded.model.reader, crops.split("test"))[0],
              **cut_metrics(loaded.model.reader, test_photos, crops.split("test")),
              **detector_metrics(loaded.model.detector, test_photos, 64, flip=True, refiner=loaded.model.refiner),
              **end_to_end(loaded.model.detector, loaded.model.reader, test_photos, 64, 0.0, flip=True,
                           views=FIVE_VIEWS, refiner=loaded.model.refiner)[0]}
    assert {f"test_{key}": value for key, value in scores.items()} == \
        {key: value for key, value in metrics.items() if key.startswith("test_")}
    assert scores["mean_levenshtein"] > 0 and scores["crops"] > 0 and scores["photos"] > 0
    assert scores["cut_plates"] == scores["photos"] == scores["e2e_found"] + scores["e2e_missed"]
    assert scores["cut_loss"] == pytest.approx(scores["photo_crops_exact"] - scores["noisy_cut_exact"], abs=1e-3)
    # without model.pt the run is refused in one line, naming its checkpoints
    (run / "model.pt").unlink()
    with pytest.raises(UserError, match="train it again") as error:
        evaluate.main(["--run", str(run)])
    assert "\n" not in str(error.value) and "reader/last.pt" in str(error.value)


def test_refine_rounds_0_trains_no_refiner_and_reads_the_boxes_as_found(runs_root, monkeypatch, tmp_path):
    import hw_plates
    from hw_plates import train
    from hw_plates.scoring import detector_metrics

    monkeypatch.delenv("DLS_DATA", raising=False)
    run = tmp_path / "run"
    metrics = train.main(TINY + ["--stage", "detect", "--refine-rounds", "0", "--run-dir", str(run)])
    loaded = hw_plates.load_model(run)
    assert loaded.model.refiner is None and loaded.config["refiner"] is None
    assert loaded.extras["detection"]["refine_rounds"] == 0 and not (run / "refiner").exists()
    assert "refiner_epochs" not in metrics and "test_unrefined_map50" not in metrics
    _, photos = make_rendered_plates(40, 20, Alphabet(), 32, 64, seed=42)
    test_photos = [p for p in photos if p.split == "test"]
    scores = detector_metrics(loaded.model.detector, test_photos, 64, flip=True)
    assert (scores["map50"], scores["map"]) == (metrics["test_map50"], metrics["test_map"])


@pytest.mark.parametrize("option, message", [
    (["--height", "40"], "--height must be a multiple of 16"),
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["--alphabet", "ABA"], "--alphabet: the alphabet repeats"),
    (["--weights", "imagenet"], "--weights imagenet needs --arch crnn_resnet18"),
    (["--stage", "both", "--resume", __file__], "--resume continues one stage"),
    (["--stage", "read", "--resume", __file__], "--resume continues one reader: give --readers 1"),
    (["--det-size", "100"], "--det-size must be a multiple of 32"),
    (["--det-crop", "100"], "--det-crop must be a multiple of 32 no larger than --det-size, got 100"),
    (["--det-crop", "512"], "--det-crop must be a multiple of 32 no larger than --det-size, got 512"),
    (["--det-mosaic", "1.5"], "--det-mosaic"),
    (["--low-res", "1.5"], "--low-res"),
    (["--readers", "0"], "argument --readers: expected an integer >= 1, got '0'"),
    (["--det-ema", "1"], "--det-ema must be below 1"),
    (["--views", "0,x,0,0"], "--views: expected 'five', 'box' or views"),
    (["--views", "0,0,0"], "--views: each view has 4 fractions"),
    (["--views", "0,0,0,0;-0.5,0,0,0"], "--views: fractions must be above -0.5"),
    (["--refine-rounds", "-1"], "argument --refine-rounds: expected an integer >= 0, got '-1'"),
    (["--refine-epochs", "0"], "argument --refine-epochs: expected an integer >= 1, got '0'"),
])
def test_bad_options_stop_with_one_line_before_any_work(option, message, runs_root, capsys):
    from hw_plates import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(option)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not runs_root.exists()


def test_evaluate_of_a_folder_without_a_model_is_one_clear_error(tmp_path):
    from hw_plates import evaluate

    from core.errors import UserError

    with pytest.raises(UserError, match=r"no model\.pt \(is this a finished training run"):
        evaluate.main(["--run", str(tmp_path)])


# -- real data -------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_plates_load_and_split_by_text_without_leaks(dls_data):
    from conftest import real_dataset

    root = real_dataset(dls_data, "plates")
    crops = load_crops(root, Alphabet(), 32, 128)
    photos = load_photos(root, Alphabet())
    assert len(crops) == 931 and len(photos) == 343
    assert all(len(p.boxes) == 1 for p in photos)
    splits = {s: set(crops.split(s).texts) for s in ("train", "val", "test")}
    assert not splits["train"] & splits["test"] and not splits["val"] & splits["test"]
    assert 0.15 < len(crops.split("test")) / len(crops) < 0.25
    # every photo's plate is also a crop, on the same side of the split
    crop_split = {name: split_of(text) for name, text in zip(crops.names, crops.texts)}
    assert all(crop_split[p.name] == p.split for p in photos)


@pytest.mark.realdata
def test_short_reader_run_on_real_crops_beats_the_most_common_text(dls_data, tmp_path):
    """Baseline: answer every test crop with the training set's most common text (exact 0.0,
    CER 0.95 on the 165 held-out crops). A 10-epoch run of a narrow reader (400 steps), no
    augmentation, must read clearly better."""
    from conftest import real_dataset

    crops = load_crops(real_dataset(dls_data, "plates"), Alphabet(), 32, 128)
    train, test = crops.split("train"), crops.split("test")
    common = max(set(train.texts), key=train.texts.count)
    baseline = reading_metrics([common] * len(test), test.texts)
    loader = DataLoader(CropDataset(train), batch_size=16, shuffle=True, collate_fn=collate_crops, drop_last=True)
    torch.manual_seed(0)
    model = CRNN(Alphabet(), channels=8, hidden=64)
    Trainer(max_epochs=10, monitor=None, progress=False, log_every_epoch=False, seed=0).fit(
        ReaderTask(model, lr=5e-3), loader)
    images = torch.stack([to_input(image) for image in test.images])
    scores = reading_metrics(read_crops(model, images), test.texts)
    assert baseline["cer"] > 0.7
    assert scores["cer"] < baseline["cer"] - 0.3 and scores["exact"] > baseline["exact"] + 0.05
