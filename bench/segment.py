"""Speed of hw_segment on this machine: one JSON line.

    python bench/segment.py [--size 128] [--batch-size 5] [--steps 6] [--no-compile]

* ``step_ms``: one training step (forward, dice+bce-like loss, backward, AdamW) of our UNet
  (recipe width 16) and of segmentation_models_pytorch's ``Unet(resnet18)``, no pretrained
  weights, same size and batch; ``smp_over_ours`` is their ratio.
* ``unet_w16_1_thread`` / ``_2_threads``: our UNet's step with 1 and with 2 intra-op threads.
* ``unet_w16_channels_last`` / ``_compiled``: our UNet's step in channels-last memory format
  and under ``torch.compile`` (its first, compiling call is reported apart).
* ``loader_images_per_s``: the augmented training DataLoader with 0 and 2 workers, and PH2
  reading + resizing when ``$DLS_DATA/ph2`` exists.

Each figure is the median of ``--steps`` timed steps after one warm-up; the configurations
take turns step by step, so a change in the machine's load hits them alike, and
``step_spread`` ((max - min) / median) says how noisy the figures were.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hw_segment.data import SegmentationDataset, load_ph2, make_lesions
from hw_segment.models import build_model


def soft_dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return dice + F.binary_cross_entropy_with_logits(logits, target)


class StepTimer:
    """A model, its optimiser and a batch, ready to time training steps."""

    def __init__(self, model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], channels_last: bool = False,
                 threads: int | None = None):
        images, masks = batch
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        self.model, self.images, self.masks, self.threads = model.train(), images, masks, threads
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        self.times: list[float] = []
        self.first_ms = self.step()  # warm-up (and, under torch.compile, the compilation)

    def step(self) -> float:
        threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        start = time.perf_counter()
        loss = soft_dice_bce(self.model(self.images), self.masks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        elapsed = 1000 * (time.perf_counter() - start)
        torch.set_num_threads(threads)
        return elapsed

    @property
    def median_ms(self) -> float:
        return round(statistics.median(self.times), 1)

    @property
    def spread(self) -> float:
        """(max - min) / median of the timed steps: how noisy the machine was."""
        return round((max(self.times) - min(self.times)) / statistics.median(self.times), 2)


def time_interleaved(timers: dict[str, StepTimer], rounds: int) -> None:
    """Time one step of each timer per round, round after round, so that a change in the
    machine's load hits every configuration alike."""
    for _ in range(rounds):
        for timer in timers.values():
            timer.times.append(timer.step())


def loader_rate(dataset, batch_size: int, workers: int, epochs: int = 3) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    next(iter(loader))  # start the workers
    start = time.perf_counter()
    n = sum(len(images) for _ in range(epochs) for images, _ in loader)
    return round(n / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = make_lesions(100, args.size, seed=0)
    batch = (data.images[:args.batch_size], data.masks[:args.batch_size])
    out: dict = {"size": args.size, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
                 "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}

    timers = {
        "unet_w16": StepTimer(build_model("unet", 16), batch),
        "smp_unet_resnet18": StepTimer(build_model("smp-unet"), batch),
        "unet_w16_1_thread": StepTimer(build_model("unet", 16), batch, threads=1),
        "unet_w16_2_threads": StepTimer(build_model("unet", 16), batch, threads=2),
        "unet_w16_channels_last": StepTimer(build_model("unet", 16), batch, channels_last=True),
    }
    if not args.no_compile:
        try:
            timers["unet_w16_compiled"] = StepTimer(torch.compile(build_model("unet", 16)), batch)
            out["compile_first_step_ms"] = round(timers["unet_w16_compiled"].first_ms, 1)
        except Exception as exc:  # no C compiler, unsupported platform, ...
            out["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    time_interleaved(timers, args.steps)
    out["step_ms"] = {name: timer.median_ms for name, timer in timers.items()}
    out["step_spread"] = {name: timer.spread for name, timer in timers.items()}
    ours = out["step_ms"]["unet_w16"]
    out["smp_over_ours"] = round(out["step_ms"]["smp_unet_resnet18"] / ours, 2)
    out["two_threads_over_one"] = round(out["step_ms"]["unet_w16_2_threads"] / out["step_ms"]["unet_w16_1_thread"], 2)
    out["channels_last_speedup"] = round(ours / out["step_ms"]["unet_w16_channels_last"], 2)
    if "unet_w16_compiled" in timers:
        out["compile_speedup"] = round(ours / out["step_ms"]["unet_w16_compiled"], 2)

    dataset = SegmentationDataset(data, train=True)
    out["loader_images_per_s"] = {f"workers_{w}": loader_rate(dataset, 25, w) for w in (0, 2)}
    ph2 = Path(os.environ.get("DLS_DATA", "")) / "ph2"
    if os.environ.get("DLS_DATA") and ph2.is_dir():
        start = time.perf_counter()
        n = len(load_ph2(ph2, args.size))
        out["loader_images_per_s"]["ph2_read_resize"] = round(n / (time.perf_counter() - start), 1)
    out["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
