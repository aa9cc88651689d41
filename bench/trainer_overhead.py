"""How much does core.Trainer cost over a hand-written PyTorch loop?

The same small CNN, from the same initial weights, is trained on the same batches by a minimal
loop (zero_grad, forward, loss, backward, step) and by ``Trainer.fit`` (no validation, no
checkpoints, no progress bar), alternately, several times, in one process. By default the
Trainer logs as a training command does (``--logger tensorboard,csv``: TensorBoard event files
with the loss and learning rate every 50 steps, history.csv, hparams at the end, in a fresh
temporary folder per fit); ``--logger none`` measures the bare loop. Both are run once first
(imports, allocator, kernels). Prints one JSON line with the median wall times and their ratio
(trainer / hand-written; 1.00 means no overhead), the same for the process's CPU time (less
disturbed by other programs sharing the cores), and whether both produced identical weights.

    python bench/trainer_overhead.py [--batches 200] [--repeats 5] [--logger tensorboard,csv|csv|none]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.callbacks import HistoryCSV
from core.loggers import make_loggers
from core.trainer import Task, Trainer


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


class Classify(Task):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def training_step(self, batch):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def hand_written(loader: DataLoader, device: torch.device) -> nn.Module:
    model = small_cnn().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return model


def with_trainer(loader: DataLoader, device: torch.device, logger: str = "none", settings: dict | None = None) -> nn.Module:
    task = Classify(small_cnn())
    with tempfile.TemporaryDirectory() as folder:
        callbacks = []
        if logger != "none":
            callbacks = [HistoryCSV(Path(folder) / "history.csv"),
                         *make_loggers(logger, folder, log_every=50, hparams=settings)]
        Trainer(max_epochs=1, monitor=None, device=str(device), seed=None, progress=False,
                log_every_epoch=False, callbacks=callbacks).fit(task, loader)
    return task.model


def timed(fn, *args):
    """Wall time, this process's CPU time (all its threads) and the result of ``fn(*args)``."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--logger", default="tensorboard,csv", choices=["tensorboard,csv", "csv", "none"],
                        help="what the Trainer writes while it trains (none: nothing)")
    args = parser.parse_args()

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    n = args.batches * args.batch_size
    data = TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=False)

    settings = vars(args)
    timed(hand_written, loader, device)  # warm-up: allocator, kernels, imports
    timed(with_trainer, loader, device, args.logger, settings)
    hand_times, trainer_times, hand_cpu, trainer_cpu = [], [], [], []
    for _ in range(args.repeats):
        t, cpu, hand_model = timed(hand_written, loader, device)
        hand_times.append(t)
        hand_cpu.append(cpu)
        t, cpu, trainer_model = timed(with_trainer, loader, device, args.logger, settings)
        trainer_times.append(t)
        trainer_cpu.append(cpu)
    same = all(torch.equal(a, b) for a, b in zip(hand_model.state_dict().values(),
                                                  trainer_model.state_dict().values()))
    hand, trainer = statistics.median(hand_times), statistics.median(trainer_times)
    hand_c, trainer_c = statistics.median(hand_cpu), statistics.median(trainer_cpu)
    print(json.dumps({
        "bench": "trainer_overhead", "device": str(device), "batches": args.batches,
        "batch_size": args.batch_size, "repeats": args.repeats, "logger": args.logger,
        "torch_threads": torch.get_num_threads(),
        "hand_written_s": round(hand, 4), "trainer_s": round(trainer, 4),
        "ratio_trainer_over_hand": round(trainer / hand, 4), "identical_weights": same,
        "hand_written_cpu_s": round(hand_c, 4), "trainer_cpu_s": round(trainer_c, 4),
        "ratio_cpu_trainer_over_hand": round(trainer_c / hand_c, 4),
        "hand_written_all_s": [round(t, 4) for t in hand_times],
        "trainer_all_s": [round(t, 4) for t in trainer_times],
    }))


if __name__ == "__main__":
    main()
