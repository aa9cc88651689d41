"""Speed of hw_segment on this machine: one JSON line.

    python bench/segment.py [--size 128] [--batch-size 5] [--steps 6] [--no-compile]

* ``step_ms``: one training step (forward, dice+bce-like loss, backward, AdamW) of our UNet
  (recipe width 16) and of segmentation_models_pytorch's ``Unet(resnet18)``, no pretrained
  weights, same size and batch; ``smp_over_ours`` is their ratio.
* ``threads``: our UNet's step with 1 and with 2 intra-op threads.
* ``channels_last``, ``compile``: our UNet's step in channels-last memory format and under
  ``torch.compile`` (its first, compiling call is reported apart).
* ``loader_images_per_s``: the augmented training DataLoader with 0 and 2 workers, and PH2
  reading + resizing when ``$DLS_DATA/ph2`` exists.

Each figure is the median of ``--steps`` timed repetitions after one warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hw_segment.data import SegmentationDataset, load_ph2, make_lesions  # noqa: E402
from hw_segment.models import build_model  # noqa: E402


def soft_dice_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return dice + F.binary_cross_entropy_with_logits(logits, target)


def step_ms(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor], steps: int,
            channels_last: bool = False) -> tuple[float, float]:
    """(first call ms, median of the following ``steps`` calls ms) of a training step."""
    images, masks = batch
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = soft_dice_bce(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(1000 * (time.perf_counter() - start))
    return round(times[0], 1), round(statistics.median(times[1:]), 1)


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
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = make_lesions(100, args.size, seed=0)
    batch = (data.images[:args.batch_size], data.masks[:args.batch_size])
    out: dict = {"size": args.size, "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(),
                 "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}

    ours = step_ms(build_model("unet", 16), batch, args.steps)[1]
    theirs = step_ms(build_model("smp-unet"), batch, args.steps)[1]
    out["step_ms"] = {"unet_w16": ours, "smp_unet_resnet18": theirs}
    out["smp_over_ours"] = round(theirs / ours, 2)

    threads = torch.get_num_threads()
    out["threads"] = {}
    for n in sorted({1, 2}):
        torch.set_num_threads(n)
        out["threads"][f"{n}_ms"] = step_ms(build_model("unet", 16), batch, args.steps)[1]
    torch.set_num_threads(threads)

    out["channels_last_ms"] = step_ms(build_model("unet", 16), batch, args.steps, channels_last=True)[1]
    out["channels_last_speedup"] = round(ours / out["channels_last_ms"], 2)
    if not args.no_compile:
        try:
            first, steady = step_ms(torch.compile(build_model("unet", 16)), batch, args.steps)
            out["compile"] = {"first_step_ms": first, "step_ms": steady, "speedup": round(ours / steady, 2)}
        except Exception as exc:  # no C compiler, unsupported platform, ...
            out["compile"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}

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
