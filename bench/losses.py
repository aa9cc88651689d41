"""Forward + backward time of core.losses against the reference implementations.

Each of our losses and its reference (smp 0.6's binary losses; torch.nn.BCEWithLogitsLoss for
BCE) is run, alternately, on the same random logits and masks of the course's batch shape,
(25, 1, 128, 128) and (25, 1, 256, 256). The references are configured to compute the same
value (checked here, and in tests/test_core_losses.py). Prints one JSON line with the median
milliseconds per forward+backward and the ratio ours / reference (below 1: ours is faster).

    python bench/losses.py [--repeats 7] [--sizes 128 256] [--device cpu] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import segmentation_models_pytorch.losses as smp_losses
import torch
from torch import nn

from core.losses import DiceLoss, FocalLoss, LovaszHingeLoss, TverskyLoss, get_loss

BATCH = 25


def pairs() -> dict[str, tuple[nn.Module, nn.Module]]:
    """name -> (ours, reference computing the same value)."""
    return {
        "bce": (get_loss("bce"), nn.BCEWithLogitsLoss()),
        "dice": (DiceLoss(smooth=0.0, skip_empty=True), smp_losses.DiceLoss("binary", from_logits=True)),
        "focal": (FocalLoss(gamma=2.0, alpha=0.25), smp_losses.FocalLoss("binary", alpha=0.25, gamma=2.0)),
        "tversky": (TverskyLoss(alpha=0.3, beta=0.7, smooth=0.0, skip_empty=True),
                    smp_losses.TverskyLoss("binary", alpha=0.3, beta=0.7)),
        "lovasz_per_image": (LovaszHingeLoss(per_image=True), smp_losses.LovaszLoss("binary", per_image=True)),
        "lovasz_batch": (LovaszHingeLoss(per_image=False), smp_losses.LovaszLoss("binary", per_image=False)),
    }


def forward_backward(loss_fn: nn.Module, logits: torch.Tensor, target: torch.Tensor) -> float:
    """Seconds for one forward and backward pass; returns the loss value too."""
    logits.grad = None
    sync = torch.cuda.synchronize if logits.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    loss = loss_fn(logits, target)
    loss.backward()
    sync()
    return time.perf_counter() - start, loss.item()


def bench_size(size: int, repeats: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(size)
    logits = (2 * torch.randn(BATCH, 1, size, size, generator=gen)).to(device).requires_grad_()
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    radius = torch.rand(BATCH, 1, 1, 1, generator=gen) * size / 3
    target = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < radius ** 2).float().to(device)  # discs, like lesions
    results = {}
    for name, (ours, reference) in pairs().items():
        _, ours_value = forward_backward(ours, logits, target)  # warm-up, and check both agree
        _, ref_value = forward_backward(reference, logits, target)
        if abs(ours_value - ref_value) > 1e-4 * max(1.0, abs(ref_value)):
            raise SystemExit(f"{name}: ours {ours_value} differs from the reference {ref_value}")
        ours_times, ref_times = [], []
        for _ in range(repeats):
            ours_times.append(forward_backward(ours, logits, target)[0])
            ref_times.append(forward_backward(reference, logits, target)[0])
        ours_ms, ref_ms = 1000 * statistics.median(ours_times), 1000 * statistics.median(ref_times)
        results[name] = {"ours_ms": round(ours_ms, 2), "ref_ms": round(ref_ms, 2), "ratio": round(ours_ms / ref_ms, 3)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per loss and size (default 7)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="image sides (default 128 256)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report = {"bench": "losses", "device": str(device), "torch_threads": torch.get_num_threads(),
              "batch": BATCH, "repeats": args.repeats, "reference": "smp 0.6 binary losses; torch BCEWithLogitsLoss"}
    for size in args.sizes:
        report[f"{BATCH}x1x{size}x{size}"] = bench_size(size, args.repeats, device)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
