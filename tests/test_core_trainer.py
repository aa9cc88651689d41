"""The Trainer: resume, accumulation, early stopping, schedulers, manual optimisation, DDP."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.callbacks import Callback, EarlyStopping
from core.checkpoint import load_checkpoint
from core.trainer import Task, Trainer

HERE = Path(__file__).parent


def small_cnn(dropout: float = 0.2) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 4 * 4, 3),
    )


class Classify(Task):
    def __init__(self, model: nn.Module, lr: float = 0.05, optimizer: str = "sgd", scheduler: str | None = None):
        super().__init__()
        self.model, self.lr, self.optimizer_name, self.scheduler_name = model, lr, optimizer, scheduler

    def training_step(self, batch):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def validation_step(self, batch):
        x, y = batch
        logits = self.model(x)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(1) == y).float()}

    def configure_optimizers(self):
        if self.optimizer_name == "adam":
            opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.scheduler_name == "step":
            return {"optimizer": opt, "scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)}
        if self.scheduler_name == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=100)
            return {"optimizer": opt, "scheduler": sched, "interval": "step"}
        return opt


def image_data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) > 0).long() + (x[:, 0, 4:].mean((1, 2)) > 0.3).long()
    return TensorDataset(x, y)


def loaders(batch_size: int = 16):
    train = DataLoader(image_data(96, 0), batch_size=batch_size, shuffle=True)
    val = DataLoader(image_data(48, 1), batch_size=32)
    return train, val


def make_task(**kwargs) -> Classify:
    torch.manual_seed(123)
    return Classify(small_cnn(), **kwargs)


def history_without_time(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["time"])


@pytest.mark.parametrize("optimizer,scheduler", [("sgd", "step"), ("adam", "onecycle")])
def test_resume_matches_uninterrupted_run(tmp_path, optimizer, scheduler):
    """4 epochs straight == 2 epochs, stop, resume for 2 more: same weights, same history.

    Shuffling and dropout draw from the global RNG, and momentum/Adam moments and the
    scheduler carry state, so this only holds if the checkpoint restores all of them.
    """
    common = dict(monitor="val_acc", mode="max", seed=7, deterministic=True, device="cpu", progress=False)

    straight = make_task(optimizer=optimizer, scheduler=scheduler)
    Trainer(max_epochs=4, run_dir=tmp_path / "straight", **common).fit(straight, *loaders())

    first = make_task(optimizer=optimizer, scheduler=scheduler)
    Trainer(max_epochs=2, run_dir=tmp_path / "split", **common).fit(first, *loaders())
    resumed = make_task(optimizer=optimizer, scheduler=scheduler)
    trainer = Trainer(max_epochs=4, run_dir=tmp_path / "split", **common)
    trainer.fit(resumed, *loaders(), resume=tmp_path / "split" / "last.pt")

    assert trainer.epoch == 4
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), f"weights differ after resume: {name}"
    h_straight = history_without_time(tmp_path / "straight" / "history.csv")
    h_resumed = history_without_time(tmp_path / "split" / "history.csv")
    assert len(h_straight) == 4
    pd.testing.assert_frame_equal(h_straight, h_resumed)
    # the run must actually have learned something for the comparison to mean anything
    assert h_straight["train_loss"].iloc[-1] < h_straight["train_loss"].iloc[0]


class Regress(Task):
    """Linear regression with SGD: no batch-norm, so the batch split must not matter."""

    def __init__(self, lr=0.1):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
        self.lr = lr

    def training_step(self, batch):
        x, y = batch
        return F.mse_loss(self.model(x).squeeze(1), y)

    def validation_step(self, batch):
        x, y = batch
        return {"loss": F.mse_loss(self.model(x).squeeze(1), y)}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def regression_data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, x @ torch.arange(1.0, 6.0) + 0.1 * torch.randn(n, generator=g))


def fit_regression(dataset, batch_size, accumulate, epochs=1) -> Regress:
    task = Regress()
    Trainer(max_epochs=epochs, monitor=None, accumulate=accumulate, device="cpu", progress=False,
            log_every_epoch=False).fit(task, DataLoader(dataset, batch_size=batch_size))
    return task


def test_gradient_accumulation_equals_large_batch():
    """k=4 batches of b=8 accumulated == one batch of 32, for two optimiser steps."""
    data = regression_data(64)
    accumulated = fit_regression(data, batch_size=8, accumulate=4)
    large = fit_regression(data, batch_size=32, accumulate=1)
    untouched = Regress()
    for a, b, c in zip(accumulated.parameters(), large.parameters(), untouched.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(a, c)  # a step was taken


def test_gradient_accumulation_uneven_last_group():
    """5 batches with accumulate=3: groups of 3 and 2 batches, each averaged over its own size,
    so it equals batches of 24 then 16 samples."""
    data = regression_data(40)
    accumulated = fit_regression(data, batch_size=8, accumulate=3)
    manual = Regress()
    opt = manual.configure_optimizers()
    for lo, hi in [(0, 24), (24, 40)]:
        x, y = data.tensors[0][lo:hi], data.tensors[1][lo:hi]
        manual.training_step((x, y)).backward()
        opt.step()
        opt.zero_grad()
    for a, b in zip(accumulated.parameters(), manual.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class Scripted(Task):
    """A task whose validation metric follows a fixed script, epoch by epoch."""

    def __init__(self, script):
        super().__init__()
        self.model = nn.Linear(1, 1)
        self.script, self.calls = list(script), 0

    def training_step(self, batch):
        return self.model(batch[0]).pow(2).mean()

    def validation_step(self, batch):
        value = self.script[self.calls]
        self.calls += 1
        return {"loss": torch.tensor(value)}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.parametrize("script,patience,min_delta,stop_epoch", [
    ([1.0, 0.8, 0.9, 0.85, 0.7, 0.6], 2, 0.0, 4),       # best at 2, no gain in 3 and 4
    ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 2, 0.0, 6),        # always improving: runs all epochs
    ([1.0, 0.96, 0.95, 0.5, 0.4, 0.3], 2, 0.06, 3),      # gains below min_delta do not count
    ([1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.1], 3, 0.0, 6),   # equal is not better; 3 epochs without gain -> epoch 6
])
def test_early_stopping_epoch(script, patience, min_delta, stop_epoch):
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=4)
    stopper = EarlyStopping("val_loss", "min", patience=patience, min_delta=min_delta)
    trainer = Trainer(max_epochs=len(script), monitor=None, callbacks=[stopper], device="cpu",
                      progress=False, log_every_epoch=False)
    history = trainer.fit(Scripted(script), loader, loader)
    assert trainer.epoch == stop_epoch
    assert [row["val_loss"] for row in history] == pytest.approx(script[:stop_epoch])


def test_best_checkpoint_tracks_monitor(tmp_path):
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=4)
    trainer = Trainer(max_epochs=5, run_dir=tmp_path, monitor="val_loss", mode="min", device="cpu",
                      progress=False, log_every_epoch=False)
    trainer.fit(Scripted([0.9, 0.5, 0.7, 0.4, 0.6]), loader, loader)
    best = load_checkpoint(tmp_path / "best.pt")
    last = load_checkpoint(tmp_path / "last.pt")
    assert best["epoch"] == 4 and best["best_score"] == pytest.approx(0.4)
    assert last["epoch"] == 5
    assert trainer.best_score == pytest.approx(0.4)


def test_step_scheduler_advances_per_optimizer_step():
    task = make_task(optimizer="adam", scheduler="onecycle")
    train, _ = loaders(batch_size=16)  # 6 batches per epoch
    trainer = Trainer(max_epochs=2, monitor=None, device="cpu", progress=False, log_every_epoch=False)
    trainer.fit(task, train)
    assert trainer.global_step == 12
    assert trainer.schedulers[0]["scheduler"].last_epoch == 12


def test_limit_batches_counts_steps():
    task = make_task()
    train, val = loaders(batch_size=16)
    trainer = Trainer(max_epochs=3, monitor=None, limit_batches=2, device="cpu", progress=False,
                      log_every_epoch=False)
    trainer.fit(task, train, val)
    assert trainer.global_step == 6


class TwoPlayers(Task):
    """A GAN-shaped task: two models, two optimisers, its own update order."""

    automatic_optimization = False

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Linear(2, 2)
        self.discriminator = nn.Linear(2, 1)

    def training_step(self, batch):
        (real,) = batch
        opt_d, opt_g = self.optimizers()
        fake = self.generator(torch.randn_like(real))
        d_loss = (F.binary_cross_entropy_with_logits(self.discriminator(real), torch.ones(len(real), 1))
                  + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), torch.zeros(len(real), 1)))
        self.manual_step(opt_d, d_loss)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.ones(len(real), 1))
        self.manual_step(opt_g, g_loss)
        return {"loss_d": d_loss.detach(), "loss_g": g_loss.detach()}

    def validation_step(self, batch):
        return {"d_real": torch.sigmoid(self.discriminator(batch[0])).squeeze(1)}

    def configure_optimizers(self):
        return [torch.optim.Adam(self.discriminator.parameters(), lr=1e-2),
                torch.optim.Adam(self.generator.parameters(), lr=1e-2)]


def test_manual_optimisation_two_optimisers(tmp_path):
    data = TensorDataset(torch.randn(64, 2) + 3.0)
    task = TwoPlayers()
    keys = set(task.state_dict())
    trainer = Trainer(max_epochs=2, run_dir=tmp_path, monitor=None, device="cpu", progress=False,
                      log_every_epoch=False)
    history = trainer.fit(task, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    assert trainer.global_step == 8  # 4 batches x 2 epochs, counted on the first optimiser
    assert {"train_loss_d", "train_loss_g", "val_d_real", "lr", "lr1"} <= set(history[-1])
    # the updates themselves are checked against a hand computation in
    # test_discriminator_update_comes_from_its_own_loss_alone; here: both Adam states are saved
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert [state["state"][0]["step"].item() for state in checkpoint["optimizers"]] == [8, 8]
    assert set(checkpoint["task"]) == keys


def test_non_finite_loss_raises():
    class Exploding(Regress):
        def training_step(self, batch):
            return torch.tensor(float("nan"), requires_grad=True)

    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, batch 0"):
        Trainer(max_epochs=1, monitor=None, device="cpu", progress=False).fit(
            Exploding(), DataLoader(regression_data(8), batch_size=4))


def test_missing_monitor_metric_is_named():
    task = make_task()
    train, val = loaders()
    trainer = Trainer(max_epochs=1, monitor="val_iou", patience=2, device="cpu", progress=False)
    with pytest.raises(KeyError, match="'val_iou' not in this epoch's metrics"):
        trainer.fit(task, train, val)


def script_env() -> dict:
    """Environment for a script run as a file: this checkout's packages first, one thread."""
    path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    """torchrun --nproc_per_node 2 (gloo on CPU), 8 samples per process == 16 in one process."""
    script = HERE / "ddp_train_script.py"
    env = script_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path / "ddp"), "8"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "single"), "16"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]

    ddp_ckpt = load_checkpoint(tmp_path / "ddp" / "last.pt")
    single_ckpt = load_checkpoint(tmp_path / "single" / "last.pt")
    assert set(ddp_ckpt["task"]) == set(single_ckpt["task"])  # no "module." prefixes from DDP
    for key in single_ckpt["task"]:
        torch.testing.assert_close(ddp_ckpt["task"][key], single_ckpt["task"][key], rtol=1e-4, atol=1e-5)
    # losses are averaged over both processes, so the logged history matches too
    ddp_hist, single_hist = ddp_ckpt["history"], single_ckpt["history"]
    assert [r["train_loss"] for r in ddp_hist] == pytest.approx([r["train_loss"] for r in single_hist], rel=1e-4)
    assert ddp_hist[-1]["train_loss"] < ddp_hist[0]["train_loss"]
    # the one-cycle schedule is sized from each process's shard: both runs take 3 x 4 steps and
    # end at the same LR (sized from the unsharded loader, the 2-process run stopped half-way)
    assert ddp_ckpt["global_step"] == single_ckpt["global_step"] == 12
    assert ddp_ckpt["schedulers"][0]["last_epoch"] == single_ckpt["schedulers"][0]["last_epoch"] == 12
    assert [r["lr"] for r in ddp_hist] == pytest.approx([r["lr"] for r in single_hist], rel=1e-6)
    # on_validation_epoch_end values are combined over processes (ranks 0 and 1, equal shares)
    assert [r["val_rank"] for r in ddp_hist] == [0.5, 0.5, 0.5]
    assert [r["val_rank"] for r in single_hist] == [0.0, 0.0, 0.0]
    # only rank 0 wrote files, and the checkpoint loads into a fresh task
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "history.csv", "last.pt"]
    sys.path.insert(0, str(HERE))
    try:
        from ddp_train_script import make_task as make_ddp_task
    finally:
        sys.path.remove(str(HERE))
    task = make_ddp_task()
    load_checkpoint(tmp_path / "ddp" / "best.pt", task)


def run_torchrun(args: list[str], env: dict, tmp_path: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 args``. On a time-out (a hung collective) torchrun
    gets SIGTERM, which it passes on to its workers (they run in sessions of their own), then
    SIGKILL, and the test fails. Output goes through files, which no stray worker can hold open."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    out_path, err_path = tmp_path / "torchrun.out", tmp_path / "torchrun.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            pytest.fail(f"torchrun hung for {timeout} s (the processes disagree on a collective):\n"
                        f"{out_path.read_text()[-2000:]}{err_path.read_text()[-2000:]}")
    return subprocess.CompletedProcess(cmd, process.returncode, out_path.read_text(), err_path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("minutes, seconds, expected", [
    # rank 0: 1 s batches, 4 per epoch, 30 s -> 7 epochs (rank 1's 2 s batches alone would plan 3)
    (0.5, ("1", "2"), {"epoch": 7, "global_step": 28, "max_epochs": 7}),
    # rank 0: 4 s batches in 6 s -> ends after the first batch (rank 1's 1 s batches would go on)
    (0.1, ("4", "1"), {"epoch": 1, "global_step": 1, "max_epochs": 3}),
])
def test_time_budget_under_ddp_is_rank_0s_for_every_process(tmp_path, minutes, seconds, expected):
    """Two processes whose clocks disagree plan the same epochs and stop after the same batch
    (rank 0 decides and broadcasts), exit 0, and the run's files are written once."""
    run = tmp_path / "run"
    result = run_torchrun([str(HERE / "ddp_train_script.py"), "--time-budget", str(run), str(minutes), *seconds],
                          script_env(), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [dict(line.split("=") for line in (tmp_path / f"rank{r}.txt").read_text().split())
               for r in (0, 1)]
    assert reports[0] == reports[1] == {k: str(v) for k, v in expected.items()}
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "history.csv", "last.pt"]
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(1, expected["epoch"] + 1))
    assert load_checkpoint(run / "last.pt")["global_step"] == expected["global_step"]


def test_ddp_processes_share_one_run_folder(tmp_path):
    """Under torchrun, code before the Trainer already knows its rank (only rank 0 writes) and
    a timestamped run folder is rank 0's on every process, even across a second boundary."""
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    reports.mkdir()
    env = {**script_env(), "DLS_RUNS": str(runs)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "ddp_train_script.py"), "--run-folder", str(reports)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = {p.stem: dict(line.split("=", 1) for line in p.read_text().splitlines())
              for p in reports.iterdir()}
    assert sorted(report) == ["rank0", "rank1"]
    assert report["rank0"]["main"] == "True" and report["rank1"]["main"] == "False"
    assert report["rank0"]["folder"] == report["rank1"]["folder"]
    assert [p.name for p in (runs / "ddp_demo").iterdir()] == [Path(report["rank0"]["folder"]).name]


class MeanOf(Task):
    """Validation reports the target as a per-batch mean and as per-sample values."""

    def __init__(self):
        super().__init__()
        self.model = nn.Linear(1, 1)

    def training_step(self, batch):
        return self.model(batch[0]).pow(2).mean()

    def validation_step(self, batch):
        x, y = batch
        return {"batch_mean": y.mean(), "per_sample": y, "as_float": float(y.mean())}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_validation_metrics_are_sample_weighted():
    """Batches of 4, 4 and 2: batch means are weighted by size, so all three equal the mean of y."""
    y = torch.arange(10.0) ** 2
    loader = DataLoader(TensorDataset(torch.ones(10, 1), y), batch_size=4)
    history = Trainer(max_epochs=1, monitor=None, device="cpu", progress=False,
                      log_every_epoch=False).fit(MeanOf(), loader, loader)
    expected = float(y.mean())  # 28.5; the unweighted mean of batch means would be 33.33
    for key in ("val_batch_mean", "val_per_sample", "val_as_float"):
        assert history[0][key] == pytest.approx(expected)


def test_progress_bar_is_quiet_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert Trainer(device="cpu").progress is False


# -- manual optimisation ------------------------------------------------------------------------
class FixedNoiseGAN(Task):
    """Two players on fixed noise (part of the batch), plain SGD: every update is a hand formula.
    The generator's loss backpropagates through the discriminator, leaving gradients on it."""

    automatic_optimization = False

    def __init__(self, lr: float = 0.1):
        super().__init__()
        torch.manual_seed(0)
        self.generator, self.discriminator, self.lr = nn.Linear(2, 2), nn.Linear(2, 1), lr

    def d_loss(self, real, noise):
        fake = self.generator(noise).detach()
        return (F.binary_cross_entropy_with_logits(self.discriminator(real), torch.ones(len(real), 1))
                + F.binary_cross_entropy_with_logits(self.discriminator(fake), torch.zeros(len(real), 1)))

    def g_loss(self, noise):
        return F.binary_cross_entropy_with_logits(self.discriminator(self.generator(noise)), torch.ones(len(noise), 1))

    def training_step(self, batch):
        real, noise = batch
        opt_d, opt_g = self.optimizers()
        d_loss = self.d_loss(real, noise)
        self.manual_step(opt_d, d_loss)
        g_loss = self.g_loss(noise)
        self.manual_step(opt_g, g_loss)
        return {"loss_d": d_loss.detach(), "loss_g": g_loss.detach()}

    def configure_optimizers(self):
        return [torch.optim.SGD(self.discriminator.parameters(), lr=self.lr),
                torch.optim.SGD(self.generator.parameters(), lr=self.lr)]


def gan_batches(n_batches: int = 3, size: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    n = n_batches * size
    return TensorDataset(torch.randn(n, 2, generator=g) + 3.0, torch.randn(n, 2, generator=g))


def test_discriminator_update_comes_from_its_own_loss_alone():
    """Each update is w -= lr * d(own loss)/dw, computed by hand with autograd.grad; the
    generator's backward in the previous batch (through the discriminator) must not leak in."""
    data = gan_batches()
    task = FixedNoiseGAN()
    Trainer(max_epochs=1, device="cpu", progress=False, log_every_epoch=False).fit(
        task, DataLoader(data, batch_size=8))

    hand = FixedNoiseGAN()
    d_params, g_params = list(hand.discriminator.parameters()), list(hand.generator.parameters())
    for real, noise in DataLoader(data, batch_size=8):
        grads = torch.autograd.grad(hand.d_loss(real, noise), d_params)
        with torch.no_grad():
            for p, g in zip(d_params, grads):
                p -= hand.lr * g
        grads = torch.autograd.grad(hand.g_loss(noise), g_params)
        with torch.no_grad():
            for p, g in zip(g_params, grads):
                p -= hand.lr * g
    for (name, a), b in zip(task.state_dict().items(), hand.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_manual_optimisation_refuses_accumulate_and_checks_the_loss():
    from core.errors import UserError

    loader = DataLoader(gan_batches(), batch_size=8)
    with pytest.raises(UserError, match="--accumulate 2: not supported for a task that makes its own"):
        Trainer(max_epochs=1, accumulate=2, device="cpu", progress=False).fit(FixedNoiseGAN(), loader)

    class Diverging(FixedNoiseGAN):
        def g_loss(self, noise):
            return super().g_loss(noise) * float("inf")

    with pytest.raises(FloatingPointError, match="loss is inf at epoch 1, batch 0"):
        Trainer(max_epochs=1, device="cpu", progress=False).fit(Diverging(), loader)


def test_without_validation_the_default_monitor_is_none(tmp_path):
    """A GAN has no validation loader: the run writes last.pt (no best.pt) and no KeyError;
    an explicit val_* monitor or --patience without validation is one clear error."""
    from core.errors import UserError

    loader = DataLoader(gan_batches(), batch_size=8)
    trainer = Trainer(max_epochs=2, run_dir=tmp_path / "gan", device="cpu", progress=False, log_every_epoch=False)
    history = trainer.fit(FixedNoiseGAN(), loader)
    assert trainer.monitor is None and len(history) == 2
    assert sorted(p.name for p in (tmp_path / "gan").iterdir()) == ["history.csv", "last.pt"]
    assert load_checkpoint(tmp_path / "gan" / "last.pt")["epoch"] == 2
    with pytest.raises(UserError, match="monitor 'val_loss' needs a validation loader"):
        Trainer(max_epochs=1, monitor="val_loss", device="cpu", progress=False).fit(FixedNoiseGAN(), loader)
    with pytest.raises(UserError, match="--patience needs a validation loader"):
        Trainer(max_epochs=1, patience=2, device="cpu", progress=False).fit(FixedNoiseGAN(), loader)
    # with a validation loader, "auto" is val_loss
    trainer = Trainer(max_epochs=1, device="cpu", progress=False, log_every_epoch=False)
    trainer.fit(make_task(), *loaders())
    assert trainer.monitor == "val_loss"


# -- what a task can read, and the hooks ------------------------------------------------------------
class Recording(Classify):
    """Logs (current_epoch, global_step) at every training step."""

    def __init__(self):
        torch.manual_seed(123)
        super().__init__(small_cnn())
        self.seen = []

    def training_step(self, batch):
        assert self.trainer.task is self
        self.seen.append((self.current_epoch, self.global_step))
        return super().training_step(batch)


def test_task_reads_epoch_and_step_and_cannot_set_them():
    task = Recording()
    assert (task.current_epoch, task.global_step) == (0, 0)  # outside fit
    with pytest.raises(RuntimeError, match="not attached to a Trainer"):
        task.trainer
    train, _ = loaders(batch_size=32)  # 3 batches per epoch
    Trainer(max_epochs=2, accumulate=2, monitor=None, device="cpu", progress=False, log_every_epoch=False).fit(task, train)
    # accumulate 2 over 3 batches: steps after batches 2 and 3 of each epoch
    assert task.seen == [(0, 0), (0, 0), (0, 1), (1, 2), (1, 2), (1, 3)]
    for name in ("trainer", "current_epoch", "global_step"):
        with pytest.raises(AttributeError):
            setattr(task, name, 1)


class HookLog(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer, task):
        self.calls.append("fit_start")

    def on_train_epoch_start(self, trainer, task):
        self.calls.append(f"epoch_start{trainer.epoch + 1}")

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        self.calls.append(f"batch{batch_index}:step{trainer.global_step}:{sorted(outputs)}")

    def on_validation_start(self, trainer, task):
        self.calls.append(f"val_start:training={task.training}")

    def on_validation_end(self, trainer, task, metrics):
        self.calls.append(f"val_end:{sorted(metrics)}")

    def on_epoch_end(self, trainer, task, metrics):
        self.calls.append("epoch_end")

    def on_fit_end(self, trainer, task):
        self.calls.append("fit_end")


def test_callback_hooks_run_in_order_with_batch_outputs():
    log = HookLog()
    train = DataLoader(image_data(64, 0), batch_size=32)
    val = DataLoader(image_data(16, 1), batch_size=16)
    Trainer(max_epochs=2, callbacks=[log], device="cpu", progress=False, log_every_epoch=False).fit(
        make_task(), train, val)
    epoch = lambda e, s: [f"epoch_start{e}", f"batch0:step{s + 1}:['loss']", f"batch1:step{s + 2}:['loss']",
                          "val_start:training=True", "val_end:['val_acc', 'val_loss']", "epoch_end"]
    assert log.calls == ["fit_start", *epoch(1, 0), *epoch(2, 2), "fit_end"]


class Constant(Task):
    """One weight w, loss (w - target)^2 summed over the batch's targets: with SGD(lr) each step is
    w <- w - lr * 2 * sum(w - t). Validation reports w itself."""

    def __init__(self):
        super().__init__()
        self.model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            self.model.weight.fill_(0.0)

    def training_step(self, batch):
        return (self.model.weight.squeeze() - batch[0]).pow(2).sum()

    def validation_step(self, batch):
        return {"w": self.model.weight.squeeze().expand(len(batch[0]))}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_ema_of_weights_matches_a_hand_computation(tmp_path):
    """decay 0.5, targets 1, 2, 3 (one per batch): w goes 0 -> 0.2 -> 0.56 -> 1.048 and the
    average 0 -> 0.1 -> 0.33 -> 0.689; validation sees the average, training continues from w."""
    from core.callbacks import EMA

    targets = torch.tensor([1.0, 2.0, 3.0])
    w, avg = 0.0, 0.0
    for t in targets.tolist():
        w = w - 0.1 * 2 * (w - t)
        avg = 0.5 * avg + 0.5 * w
    assert (round(w, 4), round(avg, 4)) == (1.048, 0.689)

    task = Constant()
    trainer = Trainer(max_epochs=1, run_dir=tmp_path, callbacks=[EMA(decay=0.5)], device="cpu", progress=False,
                      log_every_epoch=False, monitor="val_w", mode="max")
    history = trainer.fit(task, DataLoader(TensorDataset(targets), batch_size=1),
                          DataLoader(TensorDataset(torch.zeros(2)), batch_size=2))
    assert history[0]["val_w"] == pytest.approx(avg)
    assert task.model.weight.item() == pytest.approx(w)  # the trained weight is back after validation
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["task"]["model.weight"].item() == pytest.approx(w)
    assert checkpoint["ema"]["model.weight"].item() == pytest.approx(avg)
    fresh = Constant()
    load_checkpoint(tmp_path / "best.pt", fresh)
    assert fresh.model.weight.item() == pytest.approx(avg)
    load_checkpoint(tmp_path / "best.pt", fresh, ema=False)
    assert fresh.model.weight.item() == pytest.approx(w)


def test_ema_resume_continues_the_average(tmp_path):
    """2 epochs straight == 1 epoch, stop, resume: same trained weight and same average."""
    from core.callbacks import EMA

    targets = DataLoader(TensorDataset(torch.tensor([1.0, 2.0, 3.0])), batch_size=1)
    val = DataLoader(TensorDataset(torch.zeros(2)), batch_size=2)
    common = dict(device="cpu", progress=False, log_every_epoch=False, monitor="val_w", mode="max")
    straight = Trainer(max_epochs=2, callbacks=[EMA(0.5)], **common)
    h_straight = straight.fit(Constant(), targets, val)
    Trainer(max_epochs=1, run_dir=tmp_path, callbacks=[EMA(0.5)], **common).fit(Constant(), targets, val)
    resumed_task = Constant()
    h_resumed = Trainer(max_epochs=2, run_dir=tmp_path, callbacks=[EMA(0.5)], **common).fit(
        resumed_task, targets, val, resume=tmp_path / "last.pt")
    assert [r["val_w"] for r in h_resumed] == pytest.approx([r["val_w"] for r in h_straight])
    assert h_straight[1]["val_w"] != pytest.approx(h_straight[0]["val_w"])


# -- schedule length ---------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size,limit,accumulate,epochs", [
    (16, None, 1, 2),    # 6 batches
    (16, 4, 1, 3),       # limit 4
    (16, None, 4, 2),    # 6 batches in groups of 4: 2 steps per epoch
    (32, 2, 3, 2),       # 2 batches, one short group
])
def test_estimated_stepping_batches_is_the_steps_taken(batch_size, limit, accumulate, epochs):
    seen = {}

    class Sized(Classify):
        def configure_optimizers(self):
            seen["estimate"] = self.trainer.estimated_stepping_batches
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=seen["estimate"])
            return {"optimizer": opt, "scheduler": sched, "interval": "step"}

    torch.manual_seed(0)
    train, _ = loaders(batch_size=batch_size)
    trainer = Trainer(max_epochs=epochs, limit_batches=limit, accumulate=accumulate, monitor=None, device="cpu",
                      progress=False, log_every_epoch=False)
    trainer.fit(Sized(small_cnn()), train)
    assert seen["estimate"] == trainer.global_step
    expected = {(16, None, 1, 2): 12, (16, 4, 1, 3): 12, (16, None, 4, 2): 4, (32, 2, 3, 2): 2}
    assert trainer.global_step == expected[(batch_size, limit, accumulate, epochs)]
    # the one-cycle schedule ran exactly its full length (one more step would raise)
    sched = trainer.schedulers[0]["scheduler"]
    assert sched.last_epoch == sched.total_steps == seen["estimate"]


# -- resume and checkpoints ------------------------------------------------------------------------
def test_resume_with_patience_added_keeps_the_best_checkpoint(tmp_path):
    """val_loss 0.1, 0.9, 0.95; resumed with --patience 2 added: best.pt stays epoch 1 (0.1),
    and early stopping, started from the history (2 epochs without gain), stops after epoch 4."""
    loader = DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=4)
    common = dict(run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False)
    Trainer(max_epochs=3, **common).fit(Scripted([0.1, 0.9, 0.95]), loader, loader)
    trainer = Trainer(max_epochs=6, patience=2, **common)
    trainer.fit(Scripted([0.9, 0.8, 0.7]), loader, loader, resume=tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 1 and best["best_score"] == pytest.approx(0.1)
    assert trainer.epoch == 4 and trainer.best_score == pytest.approx(0.1)


class Marker:
    """Pickles to a call that creates a file: loading it with plain pickle runs code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_crafted_checkpoint_is_refused_and_runs_no_code(tmp_path):
    from core.errors import UserError

    marker = tmp_path / "code_ran"
    crafted = tmp_path / "last.pt"
    torch.save({"task": {}, "payload": Marker(marker)}, crafted)
    with pytest.raises(UserError, match=r"last.pt: refused: the file holds Python objects that could run code when loaded \(\w+\)"):
        load_checkpoint(crafted)
    with pytest.raises(UserError, match="refused"):
        Trainer(max_epochs=1, device="cpu", progress=False).fit(make_task(), *loaders(), resume=crafted)
    assert not marker.exists()
    # the control: the same file read the unsafe way does run the code
    torch.load(crafted, weights_only=False)
    assert marker.exists()


def test_trainer_checkpoints_load_weights_only_and_resume_exactly(tmp_path):
    """Everything in a checkpoint (RNG states, history, callback state) is tensors or plain values."""
    import numpy as np

    Trainer(max_epochs=1, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False).fit(
        make_task(), *loaders())
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["history"][0]["epoch"] == 1
    from core.device import rng_state, set_rng_state

    state = rng_state()
    expected = (np.random.rand(3), torch.rand(3))
    set_rng_state(checkpoint["rng"])
    set_rng_state(state)
    assert np.array_equal(np.random.rand(3), expected[0]) and torch.equal(torch.rand(3), expected[1])


def test_bad_resume_path_or_another_model_is_one_line(tmp_path):
    from core.errors import UserError

    with pytest.raises(UserError, match=r"nowhere.pt: checkpoint not found"):
        Trainer(max_epochs=1, device="cpu", progress=False).fit(make_task(), *loaders(), resume=tmp_path / "nowhere.pt")
    Trainer(max_epochs=1, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False).fit(
        Regress(), DataLoader(regression_data(16), batch_size=8), DataLoader(regression_data(8), batch_size=8))
    with pytest.raises(UserError, match=r"last.pt: checkpoint of another model \(Classify does not fit it\): "
                                        r"missing model.5.bias, model.5.weight \(2\); unexpected model.2.bias, "
                                        r"model.2.weight \(2\); shape differs for model.0.weight, model.0.bias \(2\)$"):
        Trainer(max_epochs=2, device="cpu", progress=False).fit(make_task(), *loaders(), resume=tmp_path / "last.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt: cannot read checkpoint"):
        load_checkpoint(junk)


class Interrupt(Callback):
    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        if trainer.epoch == 1 and batch_index == 2:
            raise KeyboardInterrupt


def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["hw_demo/train.py", "--epochs", "3", "--resume", "old.pt", "--run-name=x"])
    trainer = Trainer(max_epochs=3, run_dir=tmp_path / "run", callbacks=[Interrupt()], device="cpu", progress=False,
                      log_every_epoch=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(make_task(), *loaders())
    err = capsys.readouterr().err.splitlines()
    last = tmp_path / "run" / "last.pt"
    assert err[0] == f"interrupted in epoch 2; last checkpoint: {last} (end of epoch 1)"
    assert err[1].endswith(f" --epochs 3 --run-dir {last.parent} --resume {last}")
    assert load_checkpoint(last)["epoch"] == 1


def test_history_csv_never_lists_an_epoch_without_its_checkpoint(tmp_path, monkeypatch):
    """The checkpoint write of epoch 2 fails: history.csv still has epoch 1 only."""
    real_save, calls = torch.save, []

    def failing_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote best.pt and last.pt; epoch 2's first write fails
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        Trainer(max_epochs=3, run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False).fit(
            Scripted([0.9, 0.5, 0.4]), DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=4),
            DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=4))
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1]


# -- mixed precision, DDP helpers ---------------------------------------------------------------------
def test_grad_scaler_updates_once_per_batch_with_two_optimisers(monkeypatch):
    """fp16 loss scaling, two optimisers in automatic mode, 3 batches: 3 scaler updates, not 6."""

    class TwoOptimisers(Regress):
        def configure_optimizers(self):
            return [torch.optim.SGD(self.model[0].parameters(), lr=0.01),
                    torch.optim.SGD(self.model[2].parameters(), lr=0.01)]

    trainer = Trainer(max_epochs=1, monitor=None, precision="16", device="cpu", progress=False, log_every_epoch=False)
    if not trainer.scaler.is_enabled():
        pytest.skip("no fp16 grad scaler on this build")
    updates = []
    real_update = trainer.scaler.update
    monkeypatch.setattr(trainer.scaler, "update", lambda *a: (updates.append(1), real_update(*a)))
    trainer.fit(TwoOptimisers(), DataLoader(regression_data(24), batch_size=8))
    assert trainer.global_step == 3 and len(updates) == 3


def test_custom_sampler_is_sharded_not_replaced():
    """WeightedRandomSampler under 2 processes: both draw the same sequence and keep alternate
    indices, so together they take exactly the sampler's draw (not DistributedSampler's uniform one)."""
    from torch.utils.data import WeightedRandomSampler

    from core.trainer import _ShardedSampler

    weights = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 8.0])
    sampler = WeightedRandomSampler(weights, num_samples=12, replacement=True)
    shards = [_ShardedSampler(sampler, rank, 2, seed=3) for rank in (0, 1)]
    for shard in shards:
        shard.set_epoch(1)
    drawn = [list(shard) for shard in shards]
    assert [len(d) for d in drawn] == [6, 6] and len(shards[0]) == 6
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3 + 1)
        expected = list(sampler)
    assert drawn[0] == expected[0::2] and drawn[1] == expected[1::2]
    assert set(drawn[0] + drawn[1]) <= {2, 3, 5}      # zero-weight samples never drawn


def test_parameters_on_the_task_itself_are_refused_under_ddp():
    from core.errors import UserError

    class Scaled(Regress):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(UserError, match="registers parameter\\(s\\) scale on the task itself"):
        Trainer(device="cpu")._wrap_ddp(Scaled())


def test_resume_command_replaces_run_options():
    from core.trainer import resume_command

    argv = ["x.py", "--lr", "0.1", "--resume", "a/last.pt", "--run-dir=a", "--overwrite", "--run-name", "n", "--dry-run"]
    assert resume_command(Path("runs/hw/b/last.pt"), argv).endswith(
        "--lr 0.1 --dry-run --run-dir runs/hw/b --resume runs/hw/b/last.pt")


# -- resume options, time budget ------------------------------------------------------------------
def test_resume_refuses_a_changed_lr_or_an_overrun_schedule(tmp_path):
    """A run-sized one-cycle schedule: --epochs 4 on resume of a 2-epoch run would end in
    OneCycleLR's "Tried to step" traceback; a changed --lr would be silently ignored."""
    from core.errors import UserError

    class RunSized(Classify):
        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=self.lr)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr,
                                                        total_steps=self.trainer.estimated_stepping_batches)
            return {"optimizer": opt, "scheduler": sched, "interval": "step"}

    def task(lr=0.01):
        torch.manual_seed(0)
        return RunSized(small_cnn(), lr=lr)

    common = dict(run_dir=tmp_path, device="cpu", progress=False, log_every_epoch=False)
    Trainer(max_epochs=2, **common).fit(task(), *loaders())
    last = tmp_path / "last.pt"
    with pytest.raises(UserError, match=r"last.pt: its OneCycleLR was built for 2 epochs \(12 optimiser steps\), "
                                        r"these options give 4 epochs \(24 steps\); resume with --epochs 2"):
        Trainer(max_epochs=4, **common).fit(task(), *loaders(), resume=last)
    with pytest.raises(UserError, match=r"last.pt: the run was trained with other optimiser settings \("
                                        r"initial_lr 0.0004 -> 0.004, lr 0.0004 -> 0.004, max_lr 0.01 -> 0.1, min_lr 4e-08 -> 4e-07\); "
                                        r"a resume keeps the run's settings"):
        Trainer(max_epochs=2, **common).fit(task(lr=0.1), *loaders(), resume=last)
    # without a schedule, more epochs continue the run
    Trainer(max_epochs=1, run_dir=tmp_path / "plain", device="cpu", progress=False).fit(make_task(), *loaders())
    trainer = Trainer(max_epochs=3, run_dir=tmp_path / "plain", device="cpu", progress=False)
    trainer.fit(make_task(), *loaders(), resume=tmp_path / "plain" / "last.pt")
    assert trainer.epoch == 3


def test_resize_one_cycle_continues_as_the_longer_schedule():
    """A 10-step one-cycle stretched to 30 steps after 5: the remaining LRs are those of a
    30-step one-cycle from step 6 on, ending at max_lr / 25 / 1e4 on the last step."""
    from core.trainer import resize_schedule

    def one_cycle(total):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)

    opt, stretched = one_cycle(10)
    ref_opt, reference = one_cycle(30)
    lrs, ref_lrs = [], []
    for step in range(30):
        if step == 5:
            assert resize_schedule(stretched, 30)
        lrs.append(opt.param_groups[0]["lr"])
        ref_lrs.append(ref_opt.param_groups[0]["lr"])
        opt.step(), ref_opt.step()
        stretched.step(), reference.step()
    assert lrs[5:] == pytest.approx(ref_lrs[5:], rel=1e-9)   # from the step of the resize on
    assert lrs[-1] == pytest.approx(0.1 / 25 / 1e4)
    assert lrs[:5] != pytest.approx(ref_lrs[:5])   # the first steps followed the 10-step plan


class FakeClock(Callback):
    """Each training batch takes ``seconds(epoch)`` of a fake clock (it moves before any other
    callback sees the batch's end, as real time does)."""

    order = 0

    def __init__(self, seconds):
        self.now, self.seconds = 1000.0, seconds

    def __call__(self):
        return self.now

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
        self.now += self.seconds(trainer.epoch + 1)


def fit_against_clock(monkeypatch, seconds, minutes, epochs=3):
    import core.callbacks

    clock = FakeClock(seconds)
    monkeypatch.setattr(core.callbacks, "_clock", clock)
    task = make_task(optimizer="adam")
    task.configure_optimizers = lambda: {
        "optimizer": (opt := torch.optim.Adam(task.parameters(), lr=0.01)), "interval": "step",
        "scheduler": torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=task.trainer.estimated_stepping_batches)}
    train, _ = loaders(batch_size=24)  # 4 batches per epoch
    trainer = Trainer(max_epochs=epochs, time_limit=minutes, monitor=None, callbacks=[clock], device="cpu",
                      progress=False, log_every_epoch=False)
    trainer.fit(task, train)
    return trainer, clock


def test_time_limit_fits_epochs_and_schedule_to_the_budget(monkeypatch):
    """1 s per batch, 4 batches per epoch, 0.5 min: after epoch 1 (4 s) there are 26 s left,
    0.95 * 26 / 4 -> 6 more epochs: 7 epochs, 28 steps, the one-cycle schedule resized to 28."""
    trainer, clock = fit_against_clock(monkeypatch, lambda epoch: 1.0, minutes=0.5)
    sched = trainer.schedulers[0]["scheduler"]
    assert (trainer.epoch, trainer.global_step, sched.total_steps, sched.last_epoch) == (7, 28, 28, 28)
    assert clock.now - 1000.0 == 28.0 <= 30.0


def test_time_limit_shrinks_the_plan_when_epochs_slow_down(monkeypatch):
    """Epochs 1-2 take 4 s, later ones 8 s, budget 30 s: 7 epochs planned after epoch 1; after
    epoch 3 (median of 4, 4, 8 s; 14 s left) 6; after epoch 4 (median 8 s, 6 s left) 4. The run
    ends at 24 s with its one-cycle schedule completed (16 of 16 steps)."""
    trainer, clock = fit_against_clock(monkeypatch, lambda epoch: 1.0 if epoch <= 2 else 2.0, minutes=0.5)
    sched = trainer.schedulers[0]["scheduler"]
    assert clock.now - 1000.0 == 24.0
    assert (trainer.epoch, sched.total_steps, sched.last_epoch, trainer.global_step) == (4, 16, 16, 16)


def test_time_limit_with_a_schedule_grows_the_plan_in_the_first_half_of_the_budget(monkeypatch):
    """One-cycle schedule, budget 60 s: epochs 1-2 take 8 s, later ones 2 s. After epoch 4
    (20 s, 40 s left, median of 8, 2, 2 s: 2 s) the plan grows from 7 to 4 + 19 = 23 epochs, as
    a third of the budget is gone; the schedule follows, and the run ends at 58 s, its 92
    steps all taken (the old rule, only shrinking after epoch 2, stopped at 7 epochs, 26 s)."""
    trainer, clock = fit_against_clock(monkeypatch, lambda epoch: 2.0 if epoch <= 2 else 0.5, minutes=1.0)
    sched = trainer.schedulers[0]["scheduler"]
    assert (trainer.epoch, sched.total_steps, sched.last_epoch) == (23, 92, 92)
    assert clock.now - 1000.0 == 58.0 <= 60.0


def test_time_limit_with_a_schedule_never_grows_the_plan_late(monkeypatch):
    """One-cycle schedule, budget 60 s: epochs 1-5 take 8 s, later ones 2 s. The plan (7
    epochs, fitted after epoch 1) can grow only while half of the budget is left. After epoch 6
    (42 s, 18 s left, median of 8, 8, 2 s) 6 + 2 = 8 epochs would fit, but the plan keeps 7,
    and the run ends at 44 s with its schedule completed."""
    trainer, clock = fit_against_clock(monkeypatch, lambda epoch: 2.0 if epoch <= 5 else 0.5, minutes=1.0)
    sched = trainer.schedulers[0]["scheduler"]
    assert (trainer.epoch, sched.total_steps, sched.last_epoch) == (7, 28, 28)
    assert clock.now - 1000.0 == 44.0


def test_time_limit_without_a_schedule_grows_the_plan_when_epochs_speed_up(monkeypatch, capsys):
    """No LR schedule: epochs 1-3 take 8 s, later ones 4 s, budget 60 s. After epoch 3 (24 s,
    36 s left, 8 s per epoch) 7 epochs are planned; after epoch 4 (median 8 s, 32 s left) still
    7; after epoch 5 (median of 8, 4, 4 s: 4 s; 28 s left) 0.95 * 28 / 4 -> 6 more, 11 epochs
    in all, ending at 56 s: the plan grew, as it would not with a one-cycle schedule past half
    of the budget (an earlier rule stopped at 7 epochs, 40 s)."""
    import core.callbacks

    clock = FakeClock(lambda epoch: 2.0 if epoch <= 3 else 1.0)
    monkeypatch.setattr(core.callbacks, "_clock", clock)
    train, _ = loaders(batch_size=24)  # 4 batches per epoch
    trainer = Trainer(max_epochs=3, time_limit=1.0, monitor=None, callbacks=[clock], device="cpu",
                      progress=False, log_every_epoch=False)
    trainer.fit(make_task(optimizer="adam"), train)
    assert trainer.epoch == 11 and clock.now - 1000.0 == 56.0 <= 60.0
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("time limit:")]
    assert said == ["time limit: 7 epochs fit in 1.0 min (8.0 s per epoch, 0.9 min left)",   # no schedule to follow
                    "time limit: 11 epochs fit in 1.0 min (4.0 s per epoch, 0.5 min left)"]


def test_time_limit_ends_inside_an_epoch_that_overruns(monkeypatch):
    """4 s batches in a 0.1-minute (6 s) budget: after the first batch (4 s) a second would end
    at 8 s, so the epoch ends there and the run ends inside the budget."""
    trainer, clock = fit_against_clock(monkeypatch, lambda epoch: 4.0, minutes=0.1)
    assert (trainer.epoch, trainer.global_step, clock.now - 1000.0) == (1, 1, 4.0)


def test_time_limit_of_a_command_counts_from_its_start(monkeypatch):
    """--time-limit 3 after 30 s of imports and data loading leaves 2.5 minutes for training."""
    import core.device
    from core import cli

    parser = cli.make_parser("demo", "demo")
    cli.add_training_args(parser)
    monkeypatch.setattr(core.device, "process_age", lambda: 30.0)
    trainer = cli.build_trainer(cli.parse_args(parser, ["--time-limit", "3", "--device", "cpu"]))
    assert trainer.time_limit == pytest.approx(2.5)
    reserved = cli.build_trainer(cli.parse_args(parser, ["--time-limit", "3", "--device", "cpu"]), reserve_seconds=15)
    assert reserved.time_limit == pytest.approx(2.25)    # and 15 s kept for what follows the training
    assert cli.build_trainer(cli.parse_args(parser, ["--time-limit", "3", "--dry-run"])).time_limit is None
