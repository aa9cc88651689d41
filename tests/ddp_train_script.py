"""Train a small regression model; run under torchrun for DDP, or plainly for one process.

Usage: python ddp_train_script.py RUN_DIR BATCH_SIZE_PER_PROCESS
       python ddp_train_script.py --run-folder REPORT_DIR   (a timestamped run folder; each rank reports it)
       python ddp_train_script.py --taken-folder REPORT_DIR RUN_DIR   (each rank reports the refusal)
       python ddp_train_script.py --time-budget RUN_DIR MINUTES SECONDS_RANK0 SECONDS_RANK1
           (each rank's clock says a batch takes its own SECONDS; each rank reports where it stopped)
The homework-side code has no DDP in it: the Trainer adds the sampler and the wrapper.
"""
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core.trainer import Task, Trainer


class Regress(Task):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch):
        x, y = batch
        return F.mse_loss(self.model(x).squeeze(1), y)

    def validation_step(self, batch):
        x, y = batch
        return {"loss": F.mse_loss(self.model(x).squeeze(1), y, reduction="none")}

    def on_validation_epoch_end(self):
        # a whole-set value that differs per process: combined, weighted by validation samples
        return {"rank": float(self.trainer.dist.rank)}

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        steps = self.trainer.estimated_stepping_batches  # counted on this process's shard
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=steps)
        return {"optimizer": optimizer, "scheduler": scheduler, "interval": "step"}


def make_task() -> Regress:
    return Regress()


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, torch.sin(x @ torch.linspace(-1, 1, 5)) + 0.05 * torch.randn(n, generator=g))


def make_run_folder(report_dir: str) -> None:
    """Before any process group exists: each rank reports, in its own file under
    ``report_dir``, whether it is the writer and which run folder it got (all ranks must get
    rank 0's timestamp). Ends with a barrier, as ``Trainer.fit`` does, so that no process
    leaves while another still waits on the broadcast."""
    import os
    from pathlib import Path

    from core.runs import RunDir
    from core.device import barrier, is_main_process

    main = is_main_process()
    run = RunDir.create("ddp_demo")
    rank = os.environ.get("RANK")
    Path(report_dir, f"rank{rank}.txt").write_text(f"main={main}\nfolder={run.path}\n")
    barrier()


def refuse_taken_folder(report_dir: str, taken: str) -> None:
    """Every rank asks for ``taken``, a folder that holds a run: each must get rank 0's refusal
    (none may wait forever on the broadcast, none may use the folder)."""
    import argparse
    import os
    from pathlib import Path

    from core.runs import RunDir
    from core.device import barrier
    from core.errors import UserError

    try:
        RunDir.reserve("ddp_demo", argparse.Namespace(run_dir=taken, run_name=None, overwrite=False, resume=None))
        outcome = "accepted"
    except UserError as exc:
        outcome = str(exc)
    Path(report_dir, f"rank{os.environ.get('RANK')}.txt").write_text(outcome + "\n")
    barrier()


def train_against_clocks(run_dir: str, minutes: float, seconds: list[float]) -> None:
    """Fit with a time budget while each rank's clock runs at its own speed (rank r's batches
    take ``seconds[r]``): the processes can only agree if rank 0 decides for all. Each rank
    writes ``rank<r>.txt`` beside the run folder: its epochs, optimiser steps and plan."""
    import os
    from pathlib import Path

    import core.callbacks
    from core.callbacks import Callback

    rank = int(os.environ.get("RANK", 0))

    class RankClock(Callback):
        order = 0  # moves before the time budget reads it, as real time does

        def __init__(self):
            self.now = 1000.0

        def __call__(self):
            return self.now

        def on_train_batch_end(self, trainer, task, outputs, batch, batch_index):
            self.now += seconds[rank]

    clock = RankClock()
    core.callbacks._clock = clock
    train = DataLoader(dataset(64, 0), batch_size=8, shuffle=True)
    val = DataLoader(dataset(32, 1), batch_size=8)
    trainer = Trainer(max_epochs=3, run_dir=run_dir, monitor="val_loss", mode="min", device="cpu",
                      seed=1, progress=False, time_limit=minutes, callbacks=[clock])
    trainer.fit(make_task(), train, val)
    Path(run_dir).parent.joinpath(f"rank{rank}.txt").write_text(
        f"epoch={trainer.epoch}\nglobal_step={trainer.global_step}\nmax_epochs={trainer.max_epochs}\n")


if __name__ == "__main__" and sys.argv[1] == "--time-budget":
    train_against_clocks(sys.argv[2], float(sys.argv[3]), [float(sys.argv[4]), float(sys.argv[5])])
elif __name__ == "__main__" and sys.argv[1] == "--run-folder":
    make_run_folder(sys.argv[2])
elif __name__ == "__main__" and sys.argv[1] == "--taken-folder":
    refuse_taken_folder(sys.argv[2], sys.argv[3])
elif __name__ == "__main__":
    run_dir, batch_size = sys.argv[1], int(sys.argv[2])
    train = DataLoader(dataset(64, 0), batch_size=batch_size, shuffle=False)
    val = DataLoader(dataset(32, 1), batch_size=batch_size)
    trainer = Trainer(max_epochs=3, run_dir=run_dir, monitor="val_loss", mode="min", device="cpu",
                      seed=1, deterministic=True, progress=False)
    trainer.fit(make_task(), train, val)
