"""Input pipeline and train-step speed for hw_classify; prints one JSON line.

    python bench/classify.py [--images 64] [--repeats 5] [--steps 3] [--threads 1]

- decode: images/s reading the Simpsons JPEGs ($DLS_DATA/simpsons, else generated JPEGs)
  with PIL (``core.data.read_rgb``) and with ``torchvision.io.decode_jpeg``, resized to 256;
- augment: images/s of the ``strong`` training augmentation on decoded 256 px arrays, with
  albumentations (``hw_classify.data.build_transform``) and an equivalent torchvision v2
  pipeline on uint8 tensors;
- train step: seconds per step of MobileNetV2 at 224 px (batch 16) and of the small ResNet
  of the from-scratch recipe at 96 px (batch 32), contiguous vs channels-last memory format.

Each pair is timed interleaved (A, B, A, B, ...) and reported as medians and the ratio, so a
busy machine slows both alike.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision.transforms import v2

from core.data import IMAGENET_MEAN, IMAGENET_STD, read_rgb
from hw_classify.data import build_transform
from hw_classify.models import build_model

LOAD = 256


def jpeg_files(n: int, tmp: Path) -> list[Path]:
    root = Path(os.environ.get("DLS_DATA", "")) / "simpsons" / "train" / "simpsons_dataset"
    files = sorted(root.glob("*/*.jpg"))[:n] if root.is_dir() else []
    if len(files) < n:
        tmp.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(n - len(files)):
            path = tmp / f"gen{i}.jpg"
            Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8)).save(path, quality=90)
            files.append(path)
    return files


def decode_tv(path: Path) -> torch.Tensor:
    data = torchvision.io.read_file(str(path))
    image = torchvision.io.decode_jpeg(data, mode=torchvision.io.ImageReadMode.RGB)
    return F.interpolate(image[None].float(), size=(LOAD, LOAD), mode="bilinear", antialias=True)[0].byte()


def torchvision_strong(size: int):
    """torchvision v2 counterpart of ``build_transform(size, "strong")``."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.8, 1.25), antialias=True), v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=15, translate=(0.05, 0.05))], p=0.7),
        v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.02)], p=0.8),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomErasing(p=0.5, scale=(0.01, 0.06))])


def interleaved(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    times_a, times_b = [], []
    for _ in range(repeats):
        for fn, times in ((fn_a, times_a), (fn_b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times_a), statistics.median(times_b)


def train_step_fn(channels_last: bool, batch: int, arch: str = "mobilenet_v2", size: int = 224):
    torch.manual_seed(0)
    model = build_model(arch, 42, size=size).model
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 42, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()  # warm-up
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="train steps per timing")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = jpeg_files(args.images, Path("/tmp/bench_classify_jpegs"))
    n = len(files)
    pil, tv = interleaved(lambda: [read_rgb(f, LOAD) for f in files], lambda: [decode_tv(f) for f in files],
                          args.repeats)
    arrays = [read_rgb(f, LOAD) for f in files]
    tensors = [torch.from_numpy(np.array(a)).permute(2, 0, 1).contiguous() for a in arrays]
    albu, tv2 = build_transform(224, "strong"), torchvision_strong(224)
    t_albu, t_tv2 = interleaved(lambda: [albu(a) for a in arrays], lambda: [tv2(t) for t in tensors], args.repeats)
    plain, last = train_step_fn(False, args.batch), train_step_fn(True, args.batch)
    s_plain, s_last = interleaved(lambda: [plain() for _ in range(args.steps)],
                                  lambda: [last() for _ in range(args.steps)], max(2, args.repeats // 2))
    small, small_last = train_step_fn(False, 32, "small_resnet", 96), train_step_fn(True, 32, "small_resnet", 96)
    r_plain, r_last = interleaved(lambda: [small() for _ in range(args.steps)],
                                  lambda: [small_last() for _ in range(args.steps)], args.repeats)
    print(json.dumps({
        "images": n, "threads": args.threads,
        "decode_pil_images_per_s": round(n / pil, 1), "decode_torchvision_images_per_s": round(n / tv, 1),
        "decode_ratio_torchvision_over_pil": round(pil / tv, 2),
        "augment_albumentations_images_per_s": round(n / t_albu, 1),
        "augment_torchvision_v2_images_per_s": round(n / t_tv2, 1),
        "augment_ratio_albumentations_over_v2": round(t_tv2 / t_albu, 2),
        "mobilenet_v2_224_step_s": round(s_plain / args.steps, 3),
        "mobilenet_v2_224_channels_last_step_s": round(s_last / args.steps, 3),
        "channels_last_speedup": round(s_plain / s_last, 2),
        "small_resnet_96_step_s": round(r_plain / args.steps, 3),
        "small_resnet_96_channels_last_step_s": round(r_last / args.steps, 3),
        "small_resnet_channels_last_speedup": round(r_plain / r_last, 2),
    }))


if __name__ == "__main__":
    main()
