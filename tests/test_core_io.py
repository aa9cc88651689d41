"""core's submission writer, data-root resolution, image reading, CLI/run folders and plots."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from core import cli, plots, runs
from core.data import DataError, image_folder_classes, list_images, load_image, resolve_data_root
from core.metrics import accuracy, f1_micro, roc_auc
from core.submission import SubmissionError, validate_submission, write_submission

# -- submission ------------------------------------------------------------------------------

IDS = [f"img{i}.jpg" for i in range(5)]


def good_submission() -> pd.DataFrame:
    return pd.DataFrame({"Id": IDS, "Expected": ["bart", "lisa", "bart", "homer", "lisa"]})


def check(df, path=None):
    kwargs = dict(columns=["Id", "Expected"], id_column="Id", expected_ids=IDS,
                  allowed_values=["bart", "homer", "lisa"])
    if path is None:
        return validate_submission(df, name="submission.csv", **kwargs)
    return write_submission(df, path, **kwargs)


def test_valid_submission_is_written_without_index(tmp_path):
    path = check(good_submission(), tmp_path / "submission.csv")
    written = pd.read_csv(path)
    assert list(written.columns) == ["Id", "Expected"]
    assert written["Id"].tolist() == IDS


@pytest.mark.parametrize("mutate,message", [
    (lambda df: df.rename(columns={"Expected": "Label"}),
     r"submission.csv: columns must be \['Id', 'Expected'\]; missing \['Expected'\], unexpected \['Label'\]"),
    (lambda df: df[["Expected", "Id"]], r"columns must be .*order is \['Expected', 'Id'\]"),
    (lambda df: df.iloc[:4], r"submission.csv: has 4 rows, expected 5"),
    (lambda df: df.assign(Id=IDS[:4] + ["img99.jpg"]), r"1 expected id\(s\) missing, e.g. 'img4.jpg'"),
    (lambda df: df.assign(Id=IDS[:4] + ["img0.jpg"]), r"id 'img0.jpg' appears more than once"),
    (lambda df: df.assign(Expected=["bart", None, "bart", "homer", "lisa"]),
     r"1 missing value\(s\) \(NaN\); first in column 'Expected' at row 1"),
    (lambda df: df.assign(Expected=["bart", "lisa", "bart", "marge", "lisa"]),
     r"column 'Expected' row 3 has 'marge', not one of the 3 allowed values"),
])
def test_submission_errors(tmp_path, mutate, message):
    with pytest.raises(SubmissionError, match=message):
        check(mutate(good_submission()), tmp_path / "submission.csv")
    assert not (tmp_path / "submission.csv").exists()  # nothing written on failure


def test_submission_probability_range():
    df = pd.DataFrame({"Id": [0, 1, 2], "Churn": [0.1, 1.2, 0.5]})
    with pytest.raises(SubmissionError, match=r"column 'Churn' row 1 has 1.2, outside \[0.0, 1.0\]"):
        validate_submission(df, ["Id", "Churn"], id_column="Id", expected_ids=[0, 1, 2], value_range=(0.0, 1.0))
    df.loc[1, "Churn"] = 1.0
    validate_submission(df, ["Id", "Churn"], id_column="Id", expected_ids=[0, 1, 2], value_range=(0.0, 1.0))


# -- data roots and images -------------------------------------------------------------------

def test_missing_data_dir_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"--data-dir {missing}: folder does not exist"):
        resolve_data_root("ph2", missing)


def test_data_root_order(tmp_path, monkeypatch, capsys):
    (tmp_path / "env" / "ph2").mkdir(parents=True)
    (tmp_path / "explicit").mkdir()
    monkeypatch.setenv("DLS_DATA", str(tmp_path / "env"))

    explicit = resolve_data_root("ph2", tmp_path / "explicit")
    assert explicit.origin == "--data-dir" and explicit.root == (tmp_path / "explicit").resolve()
    from_env = resolve_data_root("ph2")
    assert from_env.origin == "DLS_DATA" and from_env.root == (tmp_path / "env" / "ph2").resolve()
    fallback = resolve_data_root("churn", builtin="a built-in churn sample")
    assert fallback.builtin and fallback.root is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # exactly one line per resolution
    assert lines[2] == "data: a built-in churn sample ($DLS_DATA has no 'churn' folder)"

    monkeypatch.delenv("DLS_DATA")
    assert resolve_data_root("ph2", announce=False).description.endswith("(no --data-dir, DLS_DATA unset)")


def test_image_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=f"{broken}: cannot read image"):
        load_image(broken)
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path / "absent.png")

    good = tmp_path / "good.png"
    Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(good)
    assert load_image(good).size == (6, 4)
    assert load_image(good, "L").getpixel((0, 0)) == 200


def test_image_folder_classes(tmp_path):
    for cls, n in [("bart", 2), ("lisa", 1)]:
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / cls / f"pic_{i}.jpg")
    classes = image_folder_classes(tmp_path)
    assert {k: len(v) for k, v in classes.items()} == {"bart": 2, "lisa": 1}
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="class 'empty_class' has no images"):
        image_folder_classes(tmp_path)
    with pytest.raises(DataError, match="no image files"):
        list_images(tmp_path / "empty_class")


# -- CLI and run folders ---------------------------------------------------------------------

def make_parser():
    parser = cli.make_parser("hw_demo.train", "demo")
    cli.add_data_args(parser, "demo")
    cli.add_training_args(parser, epochs=5, batch_size=8, lr=0.01)
    parser.add_argument("--loss", default="dice")
    return parser


def test_config_file_sets_defaults_and_cli_wins(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 3\nloss: focal\nbatch-size: 4\n")
    args = cli.parse_args(make_parser(), ["--config", str(config), "--epochs", "7"])
    assert (args.epochs, args.loss, args.batch_size, args.lr) == (7, "focal", 4, 0.01)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epocs": 3}))
    with pytest.raises(SystemExit):
        cli.parse_args(make_parser(), ["--config", str(bad)])


def test_dry_run_is_one_short_epoch():
    args = cli.parse_args(make_parser(), ["--dry-run"])
    assert (args.epochs, args.limit_batches) == (1, 2)


def test_run_dir_layout(runs_root, tmp_path):
    args = cli.parse_args(make_parser(), ["--run-name", "first", "--seed", "3"])
    run = runs.RunDir.create("hw_demo", args)
    assert run.path == runs_root / "hw_demo" / "first"
    saved = json.loads((run / "args.json").read_text())
    assert saved["seed"] == 3 and saved["loss"] == "dice"
    run.save_metrics({"val_iou": np.float32(0.5), "epochs": 3})
    assert json.loads((run / "metrics.json").read_text()) == {"val_iou": 0.5, "epochs": 3}
    with pytest.raises(TypeError, match="'name' is 'x', expected a number"):
        run.save_metrics({"name": "x"})

    explicit = runs.RunDir.create("hw_demo", cli.parse_args(make_parser(), ["--run-dir", str(tmp_path / "here")]))
    assert explicit.path == tmp_path / "here" and (tmp_path / "here" / "args.json").is_file()


# -- plots and metrics -----------------------------------------------------------------------

def test_plots_write_pngs(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.3], "val_loss": [1.1, 0.7, 0.6],
                            "val_iou": [0.2, 0.5, 0.7], "lr": [1e-3, 1e-3, 1e-4], "time": [1, 1, 1]})
    paths = [
        plots.plot_history(history, tmp_path / "history.png"),
        plots.image_grid([torch.rand(3, 8, 8) for _ in range(5)], tmp_path / "grid.png", titles=list("abcde")),
        plots.confusion_matrix_plot(np.array([[5, 1], [2, 7]]), ["a", "b"], tmp_path / "cm.png"),
        plots.mask_overlays([torch.rand(3, 16, 16)], [torch.zeros(1, 16, 16)], [torch.ones(1, 16, 16)],
                            tmp_path / "masks.png"),
        plots.bar_compare([1, 2], {"pred": [0.4, 0.6], "real": [0.5, 0.5]}, tmp_path / "bars.png"),
    ]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def test_classification_metrics():
    assert roc_auc([0, 1, 1, 0, 1], [0.1, 0.9, 0.4, 0.6, 0.61]) == pytest.approx(0.8333, abs=1e-4)
    assert f1_micro([0, 1, 2, 2], [0, 2, 2, 2]) == pytest.approx(0.75)
    assert accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy([1, 2], [1, 2, 3])
