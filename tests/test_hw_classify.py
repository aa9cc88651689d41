"""hw_classify: layouts from generated trees, staged unfreezing, TTA and ensembles, the
train / submit / predict commands end to end, bad input, and a real Simpsons run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core.data import DataError, rgb_array
from core.errors import UserError
from core.inference import model_outputs
from core.trainer import Trainer
from hw_classify import load_model
from hw_classify.data import build_transform, detect_layout, load_layout, make_shapes
from hw_classify.models import build_model
from hw_classify.stages import group_lrs, parse_stages
from hw_classify.task import ClassifyTask, StageSchedule

QUICK = ["--size", "32", "--n-per-class", "12", "--epochs", "2", "--width", "8", "--batch-size", "16"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def builtin_data(monkeypatch):
    """The commands fall back to the built-in shapes only without $DLS_DATA (CI sets it)."""
    monkeypatch.delenv("DLS_DATA", raising=False)


def _save(path, seed=0, mode="RGB", size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path)
    return path


def _simpsons(root, counts=None, n_test=3):
    counts = counts or {"bart_simpson": 4, "homer_simpson": 5, "lisa_simpson": 3}
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _save(root / "train" / "simpsons_dataset" / name / f"pic_{i:04d}.jpg", seed=10 * k + i)
    for i in range(n_test):
        _save(root / "testset" / "testset" / f"img{i}.jpg", seed=100 + i)
    return root


# -- layouts --------------------------------------------------------------------------------------
def test_each_layout_loads_from_a_generated_tree(tmp_path):
    simpsons = load_layout(_simpsons(tmp_path / "simpsons"), need_test=True)
    assert simpsons.layout == "simpsons" and simpsons.classes == ["bart_simpson", "homer_simpson", "lisa_simpson"]
    assert np.bincount(simpsons.train.labels).tolist() == [4, 5, 3]
    assert [f.name for f in simpsons.test_files] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert (simpsons.id_column, simpsons.label_column) == ("Id", "Expected")

    cars = tmp_path / "cars"
    rows = [("a.jpg", "10"), ("b.jpg", "2"), ("c.jpg", "2")]
    for i, (name, category) in enumerate(rows):
        _save(cars / "train" / category / name, seed=i)
    _save(cars / "test" / "t1.jpg")
    pd.DataFrame(rows, columns=["Id", "Category"]).to_csv(cars / "train.csv", index=False)
    data = load_layout(cars, need_test=True)
    assert data.layout == "cars" and data.classes == ["2", "10"]            # numeric order
    assert data.train.labels.tolist() == [1, 0, 0] and data.label_column == "Category"

    folder = tmp_path / "folder"
    _save(folder / "cat" / "1.png", mode="P")                               # palette PNG
    _save(folder / "dog" / "1.png", mode="RGBA")
    _save(folder / "dog" / "2.png", mode="L")
    plain = load_layout(folder)
    assert detect_layout(folder) == "image-folder" and plain.classes == ["cat", "dog"]
    assert plain.test_files is None


def test_bad_layouts_name_the_folder(tmp_path):
    root = _simpsons(tmp_path / "s")
    (root / "train" / "simpsons_dataset" / "maggie_simpson").mkdir()
    with pytest.raises(DataError, match="maggie_simpson"):
        load_layout(root)
    root = _simpsons(tmp_path / "t", n_test=0)
    (root / "testset" / "testset").mkdir(parents=True)
    with pytest.raises(DataError, match="testset"):
        load_layout(root, need_test=True)
    with pytest.raises(DataError, match="not a known layout"):
        (tmp_path / "empty").mkdir()
        detect_layout(tmp_path / "empty")


def test_augmentation_follows_its_seed():
    image = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    views = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        transform = build_transform(32, "strong", seed=seed)
        views[name] = torch.stack([transform(image) for _ in range(4)])
    assert torch.equal(views["a"], views["b"])              # same seed: the same four draws
    assert not torch.equal(views["a"], views["c"])
    assert not torch.equal(views["a"][0], views["a"][1])    # successive draws differ


# -- staged unfreezing ----------------------------------------------------------------------------
def _staged_task(stages="head:1,half:1,all:1"):
    torch.manual_seed(0)
    net = build_model("mobilenet_v2", 3, "none")
    return ClassifyTask(net.model, net.head, 3, parse_stages(stages), lr=1e-2, stage_decay=0.5, backbone_mult=0.1)


def test_staged_unfreezing_freezes_and_sets_lrs_per_stage():
    task = _staged_task()
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    loader = [(x, y)]
    trainer = Trainer(max_epochs=1, run_dir=None, monitor=None, seed=0, progress=False, callbacks=[StageSchedule()])
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer.fit(task, loader)
    after = task.model.state_dict()
    head = set(task.groups["head"])
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("classifier") for k in changed)       # only the head moved
    assert {f"{k}" for k in head} <= changed                                  # ... and it did move
    # running BatchNorm statistics of the frozen backbone are bit-identical too
    assert torch.equal(before["features.0.1.running_mean"], after["features.0.1.running_mean"])
    opt = trainer.optimizers[0]
    assert [g["name"] for g in opt.param_groups] == ["head", "upper", "lower"]
    # after epoch 1 the callback moved to stage 2 (half): the head at 1e-2 * 0.5, the upper half at a tenth
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-3, 5e-4, 0.0])
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trainable == head | set(task.groups["upper"])
    assert group_lrs("all", 2, 1e-2, 0.5, 0.1) == pytest.approx({"head": 2.5e-3, "upper": 2.5e-4, "lower": 2.5e-4})


def test_parse_stages_rejects_bad_specs():
    assert [(s.part, s.epochs) for s in parse_stages("head:3,half:3,all:4")] == [("head", 3), ("half", 3), ("all", 4)]
    assert [(s.part, s.epochs) for s in parse_stages("7")] == [("all", 7)]
    for bad in ("head:0", "neck:2", "all:2,head:1", "head:x"):
        with pytest.raises(ValueError):
            parse_stages(bad)


# -- commands -------------------------------------------------------------------------------------
def test_train_submit_predict_on_builtin_shapes(tmp_path, runs_root, builtin_data):
    from hw_classify import predict, submit, train

    run = tmp_path / "run"
    metrics = train.main(QUICK + ["--run-dir", str(run)])
    for name in ("args.json", "history.csv", "best.pt", "last.pt", "model.pt", "metrics.json", "per_class.csv",
                 "plots/history.png", "plots/confusion_matrix.png"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["val_f1_macro"] == metrics["val_f1_macro"]
    loaded = load_model(run)
    assert (loaded.homework, loaded.kind, loaded.name) == ("hw_classify", "classification", "run")
    assert loaded.extras["classes"] == ["circle", "square", "triangle", "cross", "ring"]   # names round-trip
    assert loaded.config == {"arch": "small_resnet", "num_classes": 5, "size": 32, "width": 8}
    assert loaded.extras["load_size"] == 36 and loaded.metrics == saved and not loaded.model.training
    out = submit.main(["--run", str(run)])
    table = pd.read_csv(out)
    assert list(table.columns) == ["Id", "Expected"] and len(table) == 40
    assert set(table["Expected"]) <= set(loaded.extras["classes"])
    assert submit.main(["--run", str(run)]).name == "submission-2.csv"                # never overwritten

    image = tmp_path / "x.png"
    Image.fromarray(make_shapes(1, 37).test_images[0]).save(image)
    single = predict.load_predictor(run).predict(Image.open(image).convert("RGB"))
    probs = [c["probability"] for c in single["classes"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-5)
    one = predict.load_ensemble(run).probabilities([Image.open(image)])
    two = predict.load_ensemble([run, run]).probabilities([Image.open(image)])
    torch.testing.assert_close(one, two)                                            # an ensemble of one run
    assert max(probs) == pytest.approx(one.max().item(), abs=1e-6)
    printed = predict.main(["--run", str(run), str(image)])                         # the command: same answer
    assert printed[str(image)]["classes"] == single["classes"]


def test_load_model_gives_the_model_the_run_scored(tmp_path, runs_root, builtin_data):
    """model.pt holds the weights of last.pt (--select last), and they score the run's metrics
    again on its validation split."""
    from argparse import Namespace

    from torch.utils.data import DataLoader

    from core.checkpoint import load_checkpoint, submodule_weights
    from core.data import resolve_data_root
    from core.metrics import classification_scores
    from hw_classify import train

    run = tmp_path / "run"
    metrics = train.main(QUICK + ["--run-dir", str(run)])
    loaded = load_model(run)
    last = submodule_weights(load_checkpoint(run / "last.pt"))
    state = loaded.model.state_dict()
    assert state.keys() == last.keys() and all(torch.equal(state[k], last[k]) for k in last)
    settings = Namespace(**loaded.settings)
    data = train.read_images(settings, resolve_data_root("simpsons", None, announce=False), None)
    _, _, val_set = train.make_loaders(data, settings)
    probs = model_outputs(loaded.model, DataLoader(val_set, batch_size=64), activation="softmax")
    scores = classification_scores(np.asarray(val_set.labels), probs.argmax(1).numpy(), 5)
    assert round(scores["accuracy"], 4) == metrics["val_accuracy"]
    assert round(scores["f1_macro"], 4) == metrics["val_f1_macro"]


def test_a_run_without_model_pt_is_refused_in_one_line_saying_to_train_again(tmp_path, cli_error):
    from hw_classify import submit

    run = tmp_path / "old"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"homework": "hw_classify", "arch": "small_resnet"}))
    (run / "last.pt").write_bytes(b"a checkpoint of the old format")
    with pytest.raises(UserError, match="train it again") as caught:
        load_model(run)
    assert "\n" not in str(caught.value)
    line = cli_error(submit.main, ["--run", str(run)])
    assert line.startswith(f"error: {run}: no model.pt") and "train it again" in line
    assert sorted(p.name for p in run.iterdir()) == ["args.json", "last.pt"]


def _fake_run(folder, net, classes, size=33, width=8):
    """A run folder holding only ``args.json`` and the ``model.pt`` of ``net``."""
    from argparse import Namespace

    from hw_classify.models import save_run_model

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps({"homework": "hw_classify"}))
    save_run_model(folder, net.model, Namespace(arch="small_resnet", size=size, width=width), classes,
                   load_size=round(size * 1.14))
    return folder


def test_an_ensemble_of_runs_with_other_classes_is_refused(tmp_path):
    from hw_classify import predict

    a = _fake_run(tmp_path / "a", build_model("small_resnet", 3, width=8), ["x", "y", "z"])
    b = _fake_run(tmp_path / "b", build_model("small_resnet", 3, width=8), ["x", "z", "y"])
    with pytest.raises(UserError, match=r"different class lists: .*\(.*a\) vs .*\(.*b\)"):
        predict.load_ensemble([a, b])


def test_compare_writes_a_row_per_architecture(tmp_path, runs_root, builtin_data):
    from hw_classify import compare

    out = tmp_path / "cmp"
    compare.main(["--archs", "simple_cnn,small_resnet", "--epochs", "1", "--size", "96", "--run-dir", str(out),
                  "--extra", "--n-per-class 6 --width 16"])  # width 8 at 96 px crashes torch 2.14 (channels-last)
    table = pd.read_csv(out / "compare.csv")
    assert table["arch"].tolist() == ["simple_cnn", "small_resnet"]
    assert table["parameters"].tolist() == [
        sum(p.numel() for p in build_model(a, 5, size=96, width=16).model.parameters()) for a in table["arch"]]
    assert "| simple_cnn |" in (out / "report.md").read_text() and (out / "plots" / "compare.png").is_file()
    with pytest.raises(SystemExit):
        compare.main(["--archs", "resnet9000"])


def test_tta_of_a_flip_invariant_model_equals_plain(tmp_path):
    from hw_classify import predict

    net = build_model("small_resnet", 5, width=8)
    data = make_shapes(1, 37)
    # mirror-symmetric conv kernels on odd sizes (33, 17, 9, 5, 3: every stride-2 grid is centred)
    # make the network's output invariant to a left-right flip
    with torch.no_grad():
        for m in net.model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
    _fake_run(tmp_path, net, data.classes)
    images = [Image.fromarray(a) for a in data.test_images[:6]]
    plain = predict.load_ensemble(tmp_path).probabilities(images)
    tta = predict.load_ensemble(tmp_path, tta=True)
    assert not torch.allclose(plain[0], plain[1])         # the images do get different answers
    # TTA = mean over (whole image, centre crop) x (as is, mirrored); the mirror changes nothing here
    arrays = [rgb_array(image, 38) for image in images]    # the load size of 33 px: round(33 * 1.14)
    crop = torch.stack([build_transform(33, "none", center_crop=True)(a) for a in arrays])
    with torch.no_grad():
        cropped = net.model.eval()(crop).softmax(1)
    torch.testing.assert_close(tta.probabilities(images), (plain + cropped) / 2, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model_outputs(net.model, crop, tta_flip=True, activation="softmax"), cropped,
                               atol=1e-6, rtol=1e-5)


def test_bad_input_gets_one_clear_message(tmp_path, runs_root, builtin_data):
    from hw_classify import submit, train

    with pytest.raises(UserError, match="nothing: run folder not found"):
        submit.main(["--run", str(tmp_path / "nothing")])
    root = _simpsons(tmp_path / "s", {"bart_simpson": 6, "homer_simpson": 6})
    (root / "train" / "simpsons_dataset" / "bart_simpson" / "pic_9999.jpg").write_bytes(b"\xff\xd8broken")
    with pytest.raises(DataError, match="pic_9999.jpg"):
        train.main(QUICK + ["--data-dir", str(root), "--on-corrupt", "error", "--run-dir", str(tmp_path / "r1")])
    with pytest.raises(SystemExit):
        train.main(["--size", "0"])
    with pytest.raises(UserError, match="--weights"):
        build_model("resnet18", 3, str(tmp_path / "missing.pth"))


def test_weights_file_loads_backbone_weights_only(tmp_path):
    torch.manual_seed(0)
    source = build_model("resnet18", 1000, "none").model
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    net = build_model("resnet18", 4, str(tmp_path / "r18.pth"))
    torch.testing.assert_close(net.model.conv1.weight, source.conv1.weight)
    assert net.model.fc.out_features == 4 and net.head == ["fc.weight", "fc.bias"]
    (tmp_path / "junk.pth").write_bytes(b"not a weights file")
    with pytest.raises(UserError, match=r"^--weights \S*junk.pth: cannot read weights file"):
        build_model("resnet18", 4, str(tmp_path / "junk.pth"))
    torch.save({"net": torch.nn.Identity()}, tmp_path / "code.pth")   # a pickled module: code on load
    with pytest.raises(UserError, match=r"^--weights \S*code.pth: refused"):
        build_model("resnet18", 4, str(tmp_path / "code.pth"))


def test_imagenet_weights_offline_is_one_sentence_naming_weights_path(monkeypatch):
    import urllib.error

    import torchvision

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(UserError, match=r"cannot download https://\S+mobilenet_v2\S+\.pth .*--weights PATH"):
        build_model("mobilenet_v2", 3, "imagenet")


def test_balanced_class_weights_by_hand():
    from hw_classify.task import balanced_class_weights

    # N / (K * n_c): 4 samples, 3 classes (one absent) -> 4/(3*3), 4/(3*1), 0
    assert balanced_class_weights([0, 0, 0, 1], 3).tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])


# -- real data ------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_simpsons_short_run_learns_and_submits(dls_data, tmp_path, runs_root):
    from conftest import real_dataset
    from hw_classify import submit, train

    root = real_dataset(dls_data, "simpsons")
    run = tmp_path / "simpsons"
    metrics = train.main(["--data-dir", str(root), "--weights", "none", "--size", "64", "--epochs", "8",
                          "--width", "16", "--run-dir", str(run)])
    data = load_layout(root)
    majority = np.bincount(data.train.labels).max() / len(data.train)
    # predicting the majority class everywhere gives macro-F1 2*0.33*1/(1.33)/5 ~ 0.1
    assert metrics["val_f1_macro"] > 0.4 and metrics["val_accuracy"] > majority + 0.1
    out = submit.main(["--run", str(run), "--data-dir", str(root)])
    table = pd.read_csv(out)
    assert len(table) == 64 and set(table["Expected"]) <= set(data.classes)
