"""hw_segment: metrics on known masks, model shapes and learning, PH2 loading and bad input,
and the train / evaluate commands end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import DataError
from core.metrics import dice_score, iou_pytorch, iou_score
from hw_segment.data import find_ph2_cases, load_ph2, make_lesions, split_indices
from core.inference import count_parameters
from hw_segment.models import MODEL_NAMES, build_model, nearest_valid_sizes, standardize_images


@pytest.fixture(autouse=True)
def one_thread():
    """These models and images are tiny: a second intra-op thread costs more than it gives,
    and on a busy machine it can make every step several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:top + side, left:left + side] = True
    return mask


# -- metrics on hand-computed masks ---------------------------------------------------------
def test_course_iou_score_on_known_masks():
    truth = _square(10, 0, 0, 5)                      # 25 pixels
    preds = [
        _square(10, 0, 0, 5),                         # identical: IoU 1 -> score 1.0
        _square(10, 0, 1, 5),                         # overlap 20, union 30: IoU 2/3 -> ceil(3.33)/10 = 0.4
        _square(10, 0, 0, 4),                         # 16 inside 25: IoU 0.64 -> ceil(2.8)/10 = 0.3
        _square(10, 5, 5, 5),                         # disjoint: IoU 0 -> 0
        torch.zeros(10, 10, dtype=torch.bool),        # empty prediction: 0
    ]
    outputs = torch.stack(preds)[:, None]
    labels = truth.expand(len(preds), 10, 10)[:, None]
    score = iou_pytorch(outputs, labels)
    assert score.tolist() == pytest.approx([1.0, 0.4, 0.3, 0.0, 0.0])
    plain = iou_score(outputs.float(), labels.float(), threshold=0.5)
    assert plain.tolist() == pytest.approx([1.0, 20 / 30, 16 / 25, 0.0, 0.0], abs=1e-6)
    dice = dice_score(outputs.float(), labels.float(), threshold=0.5)
    assert dice.tolist() == pytest.approx([1.0, 40 / 50, 32 / 41, 0.0, 0.0], abs=1e-6)


def test_iou_score_thresholds_logits_at_zero():
    logits = torch.tensor([[[[3.0, -1.0], [0.5, -4.0]]]])    # positive where > 0: two pixels
    truth = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert iou_score(logits, truth).item() == pytest.approx(1 / 3)   # 1 shared, union 3
    assert dice_score(logits, truth).item() == pytest.approx(2 / 4)


# -- models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_models_keep_resolution_and_have_plausible_sizes(name):
    model = build_model(name, width=8).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 256, 256)).shape == (1, 1, 256, 256)
        assert model(torch.rand(2, 3, 48, 80)).shape == (2, 1, 48, 80)
    # the course's width 64: UNet 34.5M without the dilated bottleneck (Ronneberger's is 31M),
    # 44.0M with it (one more 1024->1024 3x3 conv: 9.44M); SegNet about a third
    full = count_parameters(build_model(name, width=64))
    expected = {"segnet": 15.46e6, "unet": 43.96e6, "unet2": 43.61e6}[name]
    assert full == pytest.approx(expected, rel=0.01)
    if name != "segnet":
        plain = count_parameters(build_model(name, width=64, dilated=False))
        assert full - plain == 1024 * 1024 * 9 + 2 * 1024


def test_standardised_models_ignore_skin_tone_and_brightness():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    z = standardize_images(x)
    assert z.mean((2, 3)).abs().max() < 1e-5
    assert z.std((2, 3)).sub(1).abs().max() < 0.01      # std / (std + 1e-3)
    # a per-channel gain and offset (another skin tone, dimmer light) leaves the output unchanged
    gain, offset = torch.tensor([0.7, 0.9, 0.5])[:, None, None], torch.tensor([0.2, 0.05, 0.1])[:, None, None]
    for standardize, changed in ((True, False), (False, True)):
        model = build_model("unet", width=4, standardize=standardize).eval()
        with torch.no_grad():
            before, after = model(x), model(x * gain + offset)
        relative_change = ((before - after).abs().max() / before.std()).item()
        assert (relative_change > 0.5) == changed, (standardize, relative_change)   # measured: 0.02 vs 1.3


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sizes_not_divisible_by_16_raise_a_clear_error(name):
    model = build_model(name, width=4)
    with pytest.raises(ValueError, match=r"height 100 is not a multiple of 16.*96 or 112"):
        model(torch.rand(1, 3, 100, 96))
    assert nearest_valid_sizes(100) == (96, 112)
    assert nearest_valid_sizes(8) == (16, 16)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_overfits_four_images(name):
    from core.losses import get_loss

    torch.manual_seed(0)
    data = make_lesions(4, 32, seed=1)
    model = build_model(name, width=8)
    loss_fn = get_loss("bce")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = loss_fn(model(data.images), data.masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


# -- data ------------------------------------------------------------------------------------
def test_split_is_100_50_50_for_ph2_and_proportional_otherwise():
    train, val, test = split_indices(200, seed=3)
    assert (len(train), len(val), len(test)) == (100, 50, 50)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(200))
    assert [len(s) for s in split_indices(40, seed=3)] == [20, 10, 10]
    assert np.array_equal(split_indices(40, seed=3)[0], split_indices(40, seed=3)[0])


def test_builtin_lesions_are_plausible():
    data = make_lesions(50, 64, seed=0)
    assert data.images.shape == (50, 3, 64, 64) and data.masks.shape == (50, 1, 64, 64)
    assert set(data.masks.unique().tolist()) == {0.0, 1.0}
    fraction = data.masks.mean((1, 2, 3))
    assert 0.02 < fraction.min() and fraction.max() < 0.7
    inside = (data.images * data.masks).sum() / data.masks.sum() / 3
    outside = (data.images * (1 - data.masks)).sum() / (1 - data.masks).sum() / 3
    assert inside < outside - 0.1   # lesions are darker than skin
    assert torch.equal(make_lesions(3, 32, seed=5).images, make_lesions(3, 32, seed=5).images)


def _fake_ph2(root, cases=("IMD001", "IMD002", "IMD003", "IMD004"), size=(40, 30), mask_size=None):
    images_dir = root / "PH2Dataset" / "PH2 Dataset images"
    for i, name in enumerate(cases):
        (images_dir / name / f"{name}_Dermoscopic_Image").mkdir(parents=True)
        (images_dir / name / f"{name}_lesion").mkdir(parents=True)
        rgb = np.full((size[1], size[0], 3), 200, np.uint8)
        rgb[10:20, 10:30] = 60
        Image.fromarray(rgb).save(images_dir / name / f"{name}_Dermoscopic_Image" / f"{name}.bmp")
        w, h = mask_size or size
        mask = np.zeros((h, w), bool)
        mask[10:20, 10:30] = True
        img = Image.fromarray(mask) if i % 2 else Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB")
        img.save(images_dir / name / f"{name}_lesion" / f"{name}_lesion.bmp")
    return images_dir


def test_fake_ph2_tree_loads_from_any_of_its_roots(tmp_path):
    images_dir = _fake_ph2(tmp_path)
    for root in (tmp_path, tmp_path / "PH2Dataset", images_dir):
        assert [c.name for c in find_ph2_cases(root)] == ["IMD001", "IMD002", "IMD003", "IMD004"]
    data = load_ph2(tmp_path, size=16)
    assert data.images.shape == (4, 3, 16, 16)
    # 1-bit and 24-bit masks give the same mask: 10x20 of 30x40 pixels = 1/6
    assert data.masks.mean((1, 2, 3)).tolist() == pytest.approx([1 / 6] * 4, abs=0.03)
    assert torch.equal(data.masks[0], data.masks[1])


def test_case_without_mask_is_named(tmp_path):
    images_dir = _fake_ph2(tmp_path)
    (images_dir / "IMD003" / "IMD003_lesion" / "IMD003_lesion.bmp").unlink()
    with pytest.raises(DataError, match="IMD003: lesion mask not found"):
        find_ph2_cases(tmp_path)


def test_mask_of_another_size_is_named(tmp_path):
    _fake_ph2(tmp_path, cases=("IMD007",), mask_size=(20, 30))
    with pytest.raises(DataError, match=r"IMD007: mask is 20x30 but the image is 40x30"):
        load_ph2(tmp_path, size=16)


def test_unreadable_image_is_named(tmp_path):
    images_dir = _fake_ph2(tmp_path)
    (images_dir / "IMD002" / "IMD002_Dermoscopic_Image" / "IMD002.bmp").write_bytes(b"not a bitmap")
    with pytest.raises(DataError, match=r"PH2 case IMD002: .*IMD002.bmp: cannot read image"):
        load_ph2(tmp_path, size=16)


def test_folder_without_cases_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no PH2 cases found"):
        find_ph2_cases(tmp_path)


# -- real data -------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_ph2_subset_loads_every_case(dls_data):
    from conftest import real_dataset

    data = load_ph2(real_dataset(dls_data, "ph2"), size=64)
    assert len(data) == 40 and data.images.shape == (40, 3, 64, 64) and data.masks.shape == (40, 1, 64, 64)
    assert set(data.masks.unique().tolist()) == {0.0, 1.0}
    fraction = data.masks.mean((1, 2, 3))
    assert 0.2 < fraction.mean() < 0.5            # PH2 lesions fill about a third of the frame
    assert fraction.min() > 0.05 and fraction.max() < 0.99   # the 40 cases range from 8% to 98%
    assert fraction[data.names.index("IMD002")] > 0.1   # the 24-bit mask is read, not all black
    assert 0.3 < data.images.mean() < 0.8


@pytest.mark.realdata
def test_short_unet_run_on_real_ph2_beats_trivial_predictions(dls_data, tmp_path):
    from conftest import real_dataset
    from hw_segment.train import main

    root = real_dataset(dls_data, "ph2")
    metrics = main(["--data-dir", str(root), "--size", "64", "--epochs", "12", "--batch-size", "5",
                    "--run-dir", str(tmp_path / "run")])
    # all-background scores IoU 0; all-lesion scores IoU = foreground fraction
    data = load_ph2(root, size=64)
    _, val_ix, _ = split_indices(len(data), 0)
    all_lesion = iou_score(torch.ones_like(data.masks[val_ix]), data.masks[val_ix], threshold=0.5).mean().item()
    assert metrics["val_iou"] > all_lesion + 0.2, (metrics["val_iou"], all_lesion)
    assert metrics["val_iou"] > 0.6


# -- commands end to end ---------------------------------------------------------------------
def _model_of(checkpoint, name: str, width: int) -> torch.nn.Module:
    """``name`` at ``width`` with the weights of a training checkpoint, built without the commands."""
    from core.checkpoint import inference_weights, load_checkpoint

    model = build_model(name, width)
    weights = inference_weights(load_checkpoint(checkpoint))
    model.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    return model.eval()


def test_train_and_evaluate_commands_write_their_reports(tmp_path, monkeypatch):
    monkeypatch.delenv("DLS_DATA", raising=False)
    from hw_segment import evaluate, train

    run_dir = tmp_path / "run"
    metrics = train.main(["--dry-run", "--size", "32", "--n-images", "24", "--width", "4",
                          "--model", "unet2", "--loss", "dice", "--run-dir", str(run_dir)])
    for name in ("history.csv", "best.pt", "last.pt", "model.pt", "metrics.json", "args.json",
                 "plots/history.png", "plots/predictions.png"):
        assert (run_dir / name).is_file(), name
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == metrics
    for key in ("val_iou", "test_iou", "val_dice", "test_score", "epochs", "seconds_per_epoch"):
        assert key in saved
    assert saved["epochs"] == 1
    # the reported IoUs are those of the run's model (last.pt) on its test and val cases, recomputed here
    from core.inference import model_outputs
    from hw_segment.task import score_logits
    from hw_segment.train import split_data

    _, val, test = split_data(make_lesions(24, 32, seed=0), 0)
    model = _model_of(run_dir / "last.pt", "unet2", 4)
    for name, split in (("test", test), ("val", val)):
        scores = score_logits(model_outputs(model, split.images), split.masks)
        assert saved[f"{name}_iou"] == pytest.approx(scores["iou"].mean().item(), abs=2e-4)
        assert saved[f"{name}_dice"] == pytest.approx(scores["dice"].mean().item(), abs=2e-4)
    # model.pt holds that model: load_model gives the same outputs
    from hw_segment import load_model

    loaded = load_model(run_dir)
    assert (loaded.homework, loaded.kind, loaded.name) == ("hw_segment", "segmentation", "run")
    assert loaded.config == {"model": "unet2", "width": 4, "size": 32, "options": {}}
    assert loaded.extras == {"classes": ["lesion"], "threshold": 0.0}
    assert loaded.metrics == saved and loaded.settings["loss"] == "dice" and not loaded.model.training
    torch.testing.assert_close(model_outputs(loaded.model, test.images), model_outputs(model, test.images), rtol=0, atol=0)

    fake = _fake_ph2(tmp_path / "other")
    out = tmp_path / "eval"
    scores = evaluate.main(["--run", str(run_dir), "--data-dir", str(tmp_path / "other"), "--run-dir", str(out)])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == scores and saved["cases"] == 4
    fake_data = load_ph2(tmp_path / "other", size=32)
    scores = score_logits(model_outputs(model, fake_data.images), fake_data.masks)
    assert saved["iou"] == pytest.approx(scores["iou"].mean().item(), abs=2e-4)
    assert saved["score"] == pytest.approx(scores["score"].mean().item(), abs=2e-4)
    rows = (out / "per_case.csv").read_text().splitlines()
    assert rows[0].startswith("case,") and len(rows) == 5 and rows[1].startswith("IMD001,")
    assert fake.is_dir()


def test_unknown_loss_is_a_clear_error(tmp_path, cli_error):
    from hw_segment.train import main

    assert cli_error(main, ["--loss", "nope", "--dry-run", "--run-dir", str(tmp_path / "run")]).startswith(
        "error: --loss nope")


def test_size_not_divisible_by_16_stops_before_training(tmp_path, cli_error):
    from hw_segment.train import main

    assert "height 50 is not a multiple of 16" in cli_error(main, ["--size", "50", "--dry-run",
                                                                   "--run-dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_compare_writes_a_table_of_every_model_and_loss(tmp_path, monkeypatch):
    monkeypatch.delenv("DLS_DATA", raising=False)
    from hw_segment import compare

    out = tmp_path / "compare"
    compare.main(["--models", "unet", "segnet", "--losses", "0.5*dice+bce", "--run-dir", str(out),
                  "--extra", "--dry-run --size 32 --n-images 24 --width 4"])
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 2
    report = (out / "report.md").read_text().splitlines()
    assert report[0].startswith("| model | loss | test IoU")
    rows = [line for line in report[2:] if line.startswith("|")]
    assert sorted((r.split("|")[1].strip(), r.split("|")[2].split(" ")[1]) for r in rows) == [
        ("segnet", "0.5*dice+bce"), ("unet", "0.5*dice+bce")]
    assert sum("**(best)**" in r for r in rows) == 1       # one overall best, even when runs tie
    assert sum("(best loss)" in r for r in rows) == 1      # the other model's best loss
    assert (out / "plots" / "predictions.png").is_file()


# -- bad options, reused folders, foreign runs --------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--width", "0"], "argument --width: expected an integer >= 1, got '0'"),
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--accumulate", "0"], "argument --accumulate: expected an integer >= 1, got '0'"),
    (["--num-workers", "-1"], "argument --num-workers: expected an integer >= 0, got '-1'"),
    (["--device", "gpu7"], "argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu7'"),
    (["--grad-clip", "-1"], "argument --grad-clip: expected a number > 0, got '-1'"),
    (["--grad-clip", "0"], "argument --grad-clip: expected a number > 0, got '0'"),
    (["--model", "resnet"], "argument --model: invalid choice: 'resnet'"),
])
def test_bad_training_options_are_one_line_before_any_work(argv, message, runs_root, cli_error):
    from hw_segment.train import main

    assert cli_error(main, argv).startswith(f"python -m hw_segment.train: error: {message}")
    assert not runs_root.exists()


@pytest.fixture
def finished_run(segment_run, tmp_path):
    """A private copy of the shared small training run."""
    import shutil

    return shutil.copytree(segment_run, tmp_path / "finished")


def test_a_rerun_into_a_finished_run_is_refused_and_args_json_kept(finished_run, cli_error):
    from hw_segment.train import main

    before = (finished_run / "args.json").read_text()
    line = cli_error(main, ["--size", "64", "--run-dir", str(finished_run)])
    assert line.startswith(f"error: --run-dir {finished_run}: the folder already holds a run")
    line = cli_error(main, ["--size", "64", "--run-dir", str(finished_run), "--resume", str(finished_run / "no.pt")])
    assert line.endswith(f"argument --resume: {finished_run / 'no.pt'}: file not found")
    assert (finished_run / "args.json").read_text() == before


def test_evaluate_on_a_churn_run_is_one_line(tmp_path, cli_error):
    from hw_segment import evaluate

    churn = tmp_path / "churn"
    churn.mkdir()
    (churn / "args.json").write_text(json.dumps({"model": "all", "folds": 5, "threads": 2, "homework": "hw_churn"}))
    (churn / "model.json").write_text("{}")
    line = cli_error(evaluate.main, ["--run", str(churn)])
    assert line == f"error: {churn}: a run of hw_churn, not of hw_segment"
    assert sorted(p.name for p in churn.iterdir()) == ["args.json", "model.json"]  # nothing written


def test_a_run_without_model_pt_is_refused_in_one_line_saying_to_train_again(finished_run, tmp_path, cli_error):
    from hw_segment import evaluate, load_model
    from core.errors import UserError

    (finished_run / "model.pt").unlink()
    with pytest.raises(UserError, match="train it again") as caught:
        load_model(finished_run)
    assert "\n" not in str(caught.value)
    line = cli_error(evaluate.main, ["--run", str(finished_run), "--run-dir", str(tmp_path / "eval")])
    assert line.startswith(f"error: {finished_run}: no model.pt") and "train it again" in line
    assert not (tmp_path / "eval").exists()


def test_model_pt_holds_the_weights_select_names(tmp_path, monkeypatch):
    """--select best: model.pt gets best.pt's model weights, not the last epoch's."""
    monkeypatch.delenv("DLS_DATA", raising=False)
    from core.checkpoint import load_checkpoint, submodule_weights
    from core.runs import read_model
    from hw_segment import train

    run_dir = tmp_path / "run"
    train.main(["--size", "32", "--n-images", "12", "--width", "4", "--epochs", "3", "--limit-batches", "1",
                "--select", "best", "--run-dir", str(run_dir)])
    best, last = (submodule_weights(load_checkpoint(run_dir / f"{n}.pt")) for n in ("best", "last"))
    assert any(not torch.equal(best[k], last[k]) for k in best)   # the two choices differ here
    saved = read_model(run_dir, homework="hw_segment").state_dict
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in best)


def test_evaluate_gives_same_named_data_folders_their_own_outputs(finished_run, tmp_path, monkeypatch):
    from hw_segment import evaluate

    monkeypatch.setattr("time.strftime", lambda fmt: "20260101-120000")
    folders = []
    for parent in ("a", "b"):
        _fake_ph2(tmp_path / parent / "ph2")
        scores = evaluate.main(["--run", str(finished_run), "--data-dir", str(tmp_path / parent / "ph2")])
        folders.append(sorted(p.name for p in finished_run.iterdir() if p.name.startswith("eval-")))
        assert scores["cases"] == 4
    assert folders == [["eval-ph2-20260101-120000"], ["eval-ph2-20260101-120000", "eval-ph2-20260101-120000-2"]]
    for name in folders[1]:
        args = json.loads((finished_run / name / "args.json").read_text())
        assert args["data_dir"].endswith(("a/ph2", "b/ph2"))


def test_compare_reruns_changed_settings_and_honours_run_name(runs_root, monkeypatch, cli_error, capsys):
    monkeypatch.delenv("DLS_DATA", raising=False)
    from hw_segment import compare

    base = ["--models", "unet", "--losses", "dice", "--run-name", "cmp",
            "--extra", "--size 32 --n-images 12 --width 4 --limit-batches 1"]
    out = runs_root / "hw_segment" / "cmp"
    sub_run = out / "runs" / "unet-dice-split0"
    compare.main(base + ["--epochs", "1"])
    assert json.loads((sub_run / "metrics.json").read_text())["epochs"] == 1
    assert "already holds a run" in cli_error(compare.main, base + ["--epochs", "2"])
    capsys.readouterr()
    compare.main(base + ["--epochs", "2", "--resume"])  # other settings: trained again, not reused
    assert "training it again" in capsys.readouterr().out
    assert json.loads((sub_run / "metrics.json").read_text())["epochs"] == 2
    assert json.loads((sub_run / "args.json").read_text())["epochs"] == 2
    compare.main(base + ["--epochs", "2", "--resume"])  # same settings: reused
    assert "reusing" in capsys.readouterr().out
    assert [p.name for p in (runs_root / "hw_segment").iterdir()] == ["cmp"]


def test_compare_checks_every_run_before_training(runs_root, cli_error):
    from hw_segment import compare

    assert cli_error(compare.main, ["--losses", "dice", "nope"]).startswith("error: --losses nope:")
    assert "argument --width: expected an integer >= 1" in cli_error(compare.main, ["--extra", "--width 0"])
    assert not runs_root.exists()
