"""CenterNet-ResNet18, native vs MMDetection 3.3, on this machine: one JSON line.

    python bench/detection.py [--size 256] [--batch-size 8] [--steps 5] [--epochs 0]

* ``train_step_ms``: one training step (forward, CenterNet losses, backward, AdamW) of the
  native model (``core.detection``) and of MMDetection's, same input size, batch, boxes and
  architecture (ResNet-18, deconvolution neck with skip connections, no DCN: both backends'
  default), random init; ``mmdet_over_native``
  is their ratio.
* ``inference_images_per_s``: eval-mode prediction (forward + decoding) of a batch.
* ``native_bf16``: the native model's step under CPU autocast to bfloat16 (``--precision
  bf16``); ``train_bf16_over_fp32`` / ``inference_bf16_over_fp32`` are its time over fp32's,
  ``cpu_bf16`` whether the CPU has native bf16 instructions (AVX512-BF16 / AMX).
* with ``--epochs N`` (N > 0): ``map50`` of each backend after N epochs of
  ``python -m hw_detection.train`` on ``$DLS_DATA/hardhat`` (its validation split), the same
  recipe otherwise; this takes N times an epoch of each.

Figures are medians of ``--steps`` timed steps after one warm-up; the two take turns step by
step, so a change in the machine's load hits both alike.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from core.detection.centernet import CenterNet, CenterNetTask, decode
from core.device import native_bf16
from hw_detection.data import make_scenes


def batch_of(size: int, batch: int):
    scenes = make_scenes(batch, size, seed=1).samples
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes])  # uint8 RGB
    targets = [{"boxes": torch.as_tensor(s.boxes), "labels": torch.as_tensor(s.labels)} for s in scenes]
    return images, targets


def native_steps(size: int, images, targets, dtype: torch.dtype | None = None):
    """The native model's train step and inference; ``dtype``: under CPU autocast to it (bf16)."""
    import contextlib

    task = CenterNetTask(CenterNet(2, skips=True), one_cycle=False)
    task.model.to(memory_format=torch.channels_last)
    optimizer = task.configure_optimizers()
    x = images.float() / 255

    def cast():
        return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def train_step():
        task.train()
        with cast():
            loss = task.training_step((x, targets))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        task.model.eval()
        with cast():
            outputs = task.model(x)
        decode(outputs, topk=100)

    return train_step, infer


def mmdet_steps(size: int, images, targets):
    from mmdet.structures import DetDataSample
    from mmengine.optim import OptimWrapper
    from mmengine.structures import InstanceData

    from hw_detection.mmdet_backend import build_model

    model = build_model(2, dcn=False, skips=True)
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4))
    meta = dict(img_shape=(size, size), batch_input_shape=(size, size), ori_shape=(size, size),
                scale_factor=(1.0, 1.0), border=(0, size, 0, size))
    samples = []
    for t in targets:
        sample = DetDataSample(metainfo=meta)
        sample.gt_instances = InstanceData(bboxes=t["boxes"], labels=t["labels"])
        samples.append(sample)
    data = {"inputs": list(images.flip(1)), "data_samples": samples}  # BGR, as mmcv loads

    def train_step():
        model.train()
        model.train_step(data, wrapper)

    @torch.no_grad()
    def infer():
        model.eval()
        model.test_step(data)

    return train_step, infer


def interleaved(functions: dict, steps: int) -> dict:
    """Median seconds per call of each function, calls taking turns (after one warm-up each)."""
    for fn in functions.values():
        fn()
    times = {name: [] for name in functions}
    for _ in range(steps):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def map50_after(backend: str, epochs: int, data_dir: Path, size: int, batch: int) -> float:
    from hw_detection.train import main

    with tempfile.TemporaryDirectory() as tmp:
        metrics = main(["--backend", backend, "--data-dir", str(data_dir), "--epochs", str(epochs),
                        "--size", str(size), "--batch-size", str(batch), "--run-dir", f"{tmp}/run"])
    return metrics["map50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=0, help="train both this many epochs on the real data")
    args = parser.parse_args()
    torch.manual_seed(0)
    images, targets = batch_of(args.size, args.batch_size)
    native_train, native_infer = native_steps(args.size, images, targets)
    mmdet_train, mmdet_infer = mmdet_steps(args.size, images, targets)
    bf16_train, bf16_infer = native_steps(args.size, images, targets, torch.bfloat16)
    train = interleaved({"native": native_train, "mmdet": mmdet_train, "native_bf16": bf16_train}, args.steps)
    infer = interleaved({"native": native_infer, "mmdet": mmdet_infer, "native_bf16": bf16_infer}, args.steps)
    result = {
        "size": args.size, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "train_step_ms": {k: round(v * 1000, 1) for k, v in train.items()},
        "train_mmdet_over_native": round(train["mmdet"] / train["native"], 3),
        "inference_images_per_s": {k: round(args.batch_size / v, 2) for k, v in infer.items()},
        "inference_native_over_mmdet": round(infer["mmdet"] / infer["native"], 3),
        "train_bf16_over_fp32": round(train["native_bf16"] / train["native"], 3),
        "inference_bf16_over_fp32": round(infer["native_bf16"] / infer["native"], 3),
        "cpu_bf16": native_bf16(),
    }
    if args.epochs > 0:
        root = Path(os.environ.get("DLS_DATA", "")) / "hardhat"
        if not root.is_dir():
            raise SystemExit("error: --epochs needs $DLS_DATA/hardhat")
        result["epochs"] = args.epochs
        result["map50"] = {b: round(map50_after(b, args.epochs, root, args.size, args.batch_size), 4)
                           for b in ("torch", "mmdet")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
