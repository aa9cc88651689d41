"""TensorBoard logging: the event file read back holds history.csv's per-epoch values, the
step-wise losses and learning rates, the images callbacks send, and the hparams; --logger and
--log-every; the fallback to history.csv alone without the tensorboard package; rank 0 alone
writes under DDP."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core import cli
from core.callbacks import Callback
from core.loggers import TensorBoardLogger, image_array, make_loggers, parse_logger_names
from core.trainer import Task, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

HERE = Path(__file__).parent
MISSING_LINE = "tensorboard is not installed: this run logs to history.csv only (pip install tensorboard)"


# -- helpers ------------------------------------------------------------------------------------
class Classify(Task):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        torch.manual_seed(0)
        self.model, self.lr = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)), lr

    def training_step(self, batch):
        x, y = batch
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float().mean()}

    def validation_step(self, batch):
        x, y = batch
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float()}

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        return {"optimizer": opt, "scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long())


def loaders():
    return DataLoader(data(48, 0), batch_size=8, shuffle=True), DataLoader(data(24, 1), batch_size=12)


class Recorder(Callback):
    """The per-batch outputs and the first optimiser's LR after each batch, with the step."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        self.rows.append((trainer.global_step, {k: float(v) for k, v in outputs.items()},
                          trainer.optimizers[0].param_groups[0]["lr"]))


def events(folder: Path):
    """The event files of ``folder`` read as TensorBoard reads them (every point kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> tuple[list[int], list[float]]:
    points = accumulator.Scalars(tag)
    return [p.step for p in points], [p.value for p in points]


def f32(values) -> list[float]:
    """What TensorBoard stores for these numbers (32-bit floats), as Python floats."""
    return [float(np.float32(v)) for v in values]


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("events.out.tfevents.*"))


def parser():
    p = cli.make_parser("hw_demo.train", "demo")
    cli.add_training_args(p, epochs=2, batch_size=8, lr=0.05)
    return p


# -- what the event file holds ------------------------------------------------------------------
def test_event_file_holds_history_csv_per_epoch_the_step_means_and_the_hparams(tmp_path):
    from tensorboard.backend.event_processing import plugin_event_accumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    recorder = Recorder()
    settings = {"lr": 0.05, "optimizer": "sgd", "patience": None, "dry_run": False, "sizes": [8, 3]}
    logger = TensorBoardLogger(tmp_path, log_every=2, hparams=settings)
    trainer = Trainer(max_epochs=3, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False,
                      callbacks=[recorder, logger])
    train, val = loaders()
    trainer.fit(Classify(), train, val)
    assert logger.writer is None and len(event_files(tmp_path)) == 1   # closed at the end of fit

    tb = events(tmp_path)
    history = pd.read_csv(tmp_path / "history.csv")
    assert set(history.columns) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "time"}
    for column in history.columns.drop("epoch"):                   # every column, every epoch
        steps, values = scalars(tb, f"epoch/{column}")
        assert steps == [1, 2, 3], column
        assert values == f32(history[column]), column              # history.csv's numbers in float32
    assert scalars(tb, "epoch/lr")[1] == f32([0.05, 0.025, 0.0125])

    # every 2 optimiser steps: the mean of the batches since the last point, and the LR
    steps_per_epoch = 48 // 8
    expected_steps = list(range(2, 3 * steps_per_epoch + 1, 2))
    for key in ("loss", "acc"):
        steps, values = scalars(tb, f"step/{key}")
        assert steps == expected_steps
        means = [np.mean([out[key] for s, out, _ in recorder.rows if step - 2 < s <= step]) for step in expected_steps]
        assert values == pytest.approx(means, rel=1e-6, abs=1e-7)
    steps, lrs = scalars(tb, "step/lr")
    assert steps == expected_steps
    assert lrs == f32([lr for s, _, lr in recorder.rows if s in expected_steps])
    assert lrs[0] == lrs[2] == pytest.approx(0.05) and lrs[3] == pytest.approx(0.025)  # StepLR per epoch

    # the final metrics (the last epoch's, and the best monitored value) beside the settings
    last = history.iloc[-1]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert scalars(tb, f"hparams/{key}") == ([3], f32([last[key]]))
    assert scalars(tb, "hparams/best_val_loss") == ([3], f32([history["val_loss"].min()]))
    assert not [tag for tag in tb.Tags()["scalars"] if tag in ("hparams/lr", "hparams/time")]
    plugin = plugin_event_accumulator.EventAccumulator(str(tmp_path))
    plugin.Reload()
    content = plugin.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == 0.05
    assert start.hparams["optimizer"].string_value == "sgd"
    assert start.hparams["sizes"].string_value == "[8, 3]"
    assert start.hparams["dry_run"].number_value == 0
    assert "patience" not in start.hparams                           # None is left out
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert sorted(m.name.tag for m in experiment.metric_infos) == [
        "hparams/best_val_loss", "hparams/train_acc", "hparams/train_loss", "hparams/val_acc", "hparams/val_loss"]


class GridEachEpoch(Callback):
    """Sends a different picture each epoch, as a homework's sample-grid callback does."""

    def __init__(self):
        self.sent = []

    def on_epoch_end(self, trainer, task, metrics):
        image = np.zeros((6, 10, 3), np.uint8)
        image[:, :, 0] = 40 * trainer.epoch
        image[2:4, 3:7, 1] = 255
        self.sent.append(image)
        trainer.log_image("samples", torch.from_numpy(image).permute(2, 0, 1))   # a CHW uint8 tensor


class TwoPlayers(Task):
    """A GAN-shaped task: two optimisers stepped by hand, losses loss_d and loss_g."""

    automatic_optimization = False

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.generator, self.discriminator = nn.Linear(2, 4), nn.Linear(4, 1)

    def training_step(self, batch):
        (real,) = batch
        opt_d, opt_g = self.optimizers()
        fake = self.generator(torch.randn(len(real), 2))
        loss_d = F.softplus(-self.discriminator(real)).mean() + F.softplus(self.discriminator(fake.detach())).mean()
        self.manual_step(opt_d, loss_d)
        loss_g = F.softplus(-self.discriminator(fake)).mean()
        self.manual_step(opt_g, loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def configure_optimizers(self):
        return [torch.optim.Adam(self.discriminator.parameters(), lr=1e-3),
                torch.optim.Adam(self.generator.parameters(), lr=2e-3)]


def test_a_gan_like_runs_losses_and_images_reach_the_event_file(tmp_path):
    grids = GridEachEpoch()
    trainer = Trainer(max_epochs=2, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False,
                      callbacks=[grids, TensorBoardLogger(tmp_path, log_every=3)])
    trainer.fit(TwoPlayers(), DataLoader(TensorDataset(torch.randn(48, 4)), batch_size=8))
    tb = events(tmp_path)
    images = tb.Images("samples")
    assert [i.step for i in images] == [1, 2]
    for image, sent in zip(images, grids.sent):
        decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        assert (image.height, image.width) == (6, 10)
        np.testing.assert_array_equal(decoded, sent)                 # PNG: the very pixels
    for tag in ("step/loss_d", "step/loss_g", "step/lr", "step/lr1"):
        assert scalars(tb, tag)[0] == [3, 6, 9, 12], tag
    assert set(scalars(tb, "step/lr1")[1]) == {float(np.float32(2e-3))}
    assert scalars(tb, "epoch/train_loss_g")[1] == f32([row["train_loss_g"] for row in trainer.history])
    assert not (tmp_path / "hparams").exists() and len(event_files(tmp_path)) == 1


def write_faces(folder: Path, n: int = 24, size: int = 16) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"face_{i:03d}.png")


def test_hw_gan_train_sends_its_sample_grid_and_losses(tmp_path, runs_root):
    from hw_gan.train import main

    write_faces(tmp_path / "faces" / "faces")
    run = tmp_path / "run"
    main(["--data-dir", str(tmp_path / "faces"), "--image-size", "16", "--width", "4", "--latent", "8",
          "--batch-size", "8", "--holdout", "8", "--device", "cpu", "--epochs", "2", "--log-every", "1",
          "--run-dir", str(run)])
    tb = events(run)
    images = tb.Images("samples")
    assert [i.step for i in images] == [1, 2]
    for image in images:   # the grid the run saved for that epoch, pixel for pixel
        saved = np.asarray(Image.open(run / "plots" / "samples" / f"epoch_{image.step:03d}.png").convert("RGB"))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(image.encoded_image_string))), saved)
    history = pd.read_csv(run / "history.csv")
    for column in ("train_loss_d", "train_loss_g", "train_real_score", "train_fake_score"):
        assert scalars(tb, f"epoch/{column}") == ([1, 2], f32(history[column])), column
    assert scalars(tb, "step/loss_d")[0] == [1, 2, 3, 4]                # 16 images, 8 per batch, 2 epochs
    assert scalars(tb, "hparams/train_loss_g") == ([2], f32([history["train_loss_g"].iloc[-1]]))


def test_hw_segment_train_sends_its_predictions_figure(tmp_path, runs_root):
    from hw_segment.train import main

    run = tmp_path / "run"
    main(["--dry-run", "--seed", "0", "--device", "cpu", "--run-dir", str(run)])
    images = events(run).Images("predictions")
    assert [i.step for i in images] == [1]     # after the one epoch of the dry run
    logged = Image.open(io.BytesIO(images[0].encoded_image_string))
    saved = Image.open(run / "plots" / "predictions.png").convert(logged.mode)   # matplotlib's PNG is RGBA
    assert logged.size == saved.size and logged.size[0] > 100
    np.testing.assert_array_equal(np.asarray(logged), np.asarray(saved))
    csv_only = tmp_path / "csv"
    main(["--dry-run", "--seed", "0", "--device", "cpu", "--logger", "csv", "--run-dir", str(csv_only)])
    assert event_files(csv_only) == []


# -- options and fallbacks ----------------------------------------------------------------------
def test_logger_option_values(capsys):
    assert cli.parse_args(parser(), []).logger == "tensorboard,csv"
    assert cli.parse_args(parser(), []).log_every == 50
    assert cli.parse_args(parser(), ["--logger", " CSV "]).logger == "csv"
    assert cli.parse_args(parser(), ["--logger", "csv,tensorboard"]).logger == "csv,tensorboard"
    assert parse_logger_names("tensorboard,csv") == ("tensorboard", "csv")
    for value, message in [("tensorboard", "csv cannot be left out"), ("tb,csv", "unknown logger 'tb'"),
                           ("csv,csv", "named twice"), ("", "unknown logger ''")]:
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_args(parser(), ["--logger", value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --logger" in err and message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit):
        cli.parse_args(parser(), ["--log-every", "0"])
    assert "argument --log-every: expected an integer >= 1, got '0'" in capsys.readouterr().err


def fit_from_args(argv: list[str], run_dir: Path) -> Trainer:
    args = cli.parse_args(parser(), argv)
    trainer = cli.build_trainer(args, run_dir=run_dir, monitor="val_loss", progress=False)
    train, val = loaders()
    trainer.fit(Classify(), train, val)
    return trainer


def test_build_trainer_adds_tensorboard_by_default_and_csv_alone_on_request(tmp_path, capsys):
    default = fit_from_args(["--epochs", "2", "--log-every", "4"], tmp_path / "default")
    loggers = [cb for cb in default.callbacks if isinstance(cb, TensorBoardLogger)]
    assert len(loggers) == 1 and loggers[0].log_every == 4 and loggers[0].hparams["epochs"] == 2
    tb = events(tmp_path / "default")
    assert scalars(tb, "step/loss")[0] == [4, 8, 12]
    assert scalars(tb, "epoch/val_loss")[1] == f32(pd.read_csv(tmp_path / "default" / "history.csv")["val_loss"])
    assert MISSING_LINE not in capsys.readouterr().out

    csv_only = fit_from_args(["--epochs", "2", "--logger", "csv"], tmp_path / "csv")
    assert not [cb for cb in csv_only.callbacks if isinstance(cb, TensorBoardLogger)]
    assert event_files(tmp_path / "csv") == [] and (tmp_path / "csv" / "history.csv").is_file()
    assert make_loggers("tensorboard,csv", None) == []                   # no run folder, nothing to write into


def hide_tensorboard(monkeypatch) -> None:
    """As if the tensorboard package were not installed: torch.utils.tensorboard, imported
    afresh, fails on its ``import tensorboard``."""
    for name in list(sys.modules):
        if name == "torch.utils.tensorboard" or name.startswith("torch.utils.tensorboard."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)


def test_without_the_tensorboard_package_the_run_keeps_history_csv_and_says_so_once(tmp_path, monkeypatch, capsys):
    import core.loggers

    hide_tensorboard(monkeypatch)
    monkeypatch.setattr(core.loggers, "_said_missing", False)
    with pytest.raises(ImportError):
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    trainer = fit_from_args(["--epochs", "2"], tmp_path / "first")
    assert capsys.readouterr().out.count(MISSING_LINE) == 1
    assert not [cb for cb in trainer.callbacks if isinstance(cb, TensorBoardLogger)]
    assert event_files(tmp_path / "first") == []
    assert pd.read_csv(tmp_path / "first" / "history.csv")["epoch"].tolist() == [1, 2]
    fit_from_args(["--epochs", "1"], tmp_path / "second")      # a second Trainer in the process (plates, compare)
    assert MISSING_LINE not in capsys.readouterr().out
    assert event_files(tmp_path / "second") == [] and (tmp_path / "second" / "history.csv").is_file()
    assert cli.parse_args(parser(), []).logger == "tensorboard,csv"     # the option itself still parses


def test_a_process_other_than_rank_0_writes_no_event_file(tmp_path, monkeypatch):
    import core.trainer
    from core.device import DistInfo

    # rank 1 of a group of one: nothing distributed to join, but not the main process
    monkeypatch.setattr(core.trainer, "init_distributed", lambda device: DistInfo(rank=1, world_size=1))
    logger = TensorBoardLogger(tmp_path, log_every=1, hparams={"lr": 0.05})
    trainer = Trainer(max_epochs=2, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False,
                      callbacks=[GridEachEpoch(), logger])
    train, val = loaders()
    trainer.fit(Classify(), train, val)
    assert trainer.global_step == 12 and logger.writer is None
    assert event_files(tmp_path) == [] and not (tmp_path / "history.csv").exists()


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_writes_the_event_file(tmp_path):
    script = tmp_path / "ddp_log.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        sys.path.insert(0, sys.argv[2])
        from test_core_loggers import Classify, GridEachEpoch, data
        from core.loggers import TensorBoardLogger
        from core.trainer import Trainer

        run = sys.argv[1]
        trainer = Trainer(max_epochs=2, run_dir=run, device="cpu", progress=False, seed=1,
                          callbacks=[GridEachEpoch(), TensorBoardLogger(run, log_every=1, hparams={"lr": 0.05})])
        trainer.fit(Classify(), DataLoader(data(48, 0), batch_size=8, shuffle=True),
                    DataLoader(data(24, 1), batch_size=12))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(run), str(HERE)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(event_files(run)) == 1
    tb = events(run)
    history = pd.read_csv(run / "history.csv")
    assert scalars(tb, "epoch/val_loss") == ([1, 2], f32(history["val_loss"]))   # the values of all processes
    assert scalars(tb, "step/loss")[0] == [1, 2, 3, 4, 5, 6]                      # 48 samples / 2 processes / 8
    assert [i.step for i in tb.Images("samples")] == [1, 2]


# -- images -------------------------------------------------------------------------------------
def test_image_array_takes_the_usual_picture_types(tmp_path):
    import matplotlib.pyplot as plt

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    assert image_array(rgb).tolist() == rgb.tolist()
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    assert image_array(chw).tolist() == rgb.tolist()
    assert image_array(chw.float() / 255).tolist() == rgb.tolist()               # floats in [0, 1]
    grey = np.array([[0.0, 0.5], [1.0, 2.0]])
    assert image_array(grey)[:, :, 0].tolist() == [[0, 128], [255, 255]]         # clipped, 3 channels
    assert image_array(grey).shape == (2, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "picture.png")
    assert image_array(tmp_path / "picture.png").tolist() == rgb.tolist()
    assert image_array(Image.fromarray(rgb).convert("L")).shape == (2, 3, 3)
    figure = plt.figure(figsize=(2, 1), dpi=50)
    assert image_array(figure).shape == (50, 100, 3)
    plt.close(figure)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 5\)"):
        image_array(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="picture.jpg: image file not found"):
        image_array(tmp_path / "picture.jpg")
    with pytest.raises(ValueError, match="cannot log an image of type list"):
        image_array([[1, 2]])


def test_an_image_sent_after_fit_goes_into_a_new_closed_event_file(tmp_path):
    trainer = Trainer(max_epochs=1, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False,
                      callbacks=[TensorBoardLogger(tmp_path)])
    train, val = loaders()
    trainer.fit(Classify(), train, val)
    trainer.log_image("predictions", np.full((4, 5, 3), 7, np.uint8))
    assert len(event_files(tmp_path)) == 2
    (image,) = events(tmp_path).Images("predictions")
    assert image.step == 1
    assert np.asarray(Image.open(io.BytesIO(image.encoded_image_string))).tolist() == \
        np.full((4, 5, 3), 7, np.uint8).tolist()
