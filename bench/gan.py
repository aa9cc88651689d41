"""Speed of one hw_gan training step on this machine: one JSON line.

    python bench/gan.py [--image-size 64] [--batch-size 128] [--width 64] [--steps 5] [--threads N]

A step is what ``GANTask.training_step`` does per batch: one generator forward pass, a
discriminator step on real and fake images, a generator step through the frozen
discriminator (Adam for both). ``step_ms`` holds the median time of ``--steps`` timed steps
(after one warm-up) in the default (contiguous) memory format and in channels-last;
``channels_last_speedup`` is contiguous / channels-last. The two take turns step by step, so
a change in the machine's load hits them alike; ``step_spread`` ((max - min) / median) says
how noisy the figures were. Defaults: the course's networks (width 64) at 64 px, batch 128.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hw_gan.models import Discriminator, Generator
from hw_gan.task import GANTask


class GANStep:
    """A GAN task, its two optimisers and a real batch, ready to time training steps."""

    def __init__(self, image_size: int, width: int, batch_size: int, channels_last: bool):
        torch.manual_seed(0)
        self.task = GANTask(Generator(image_size, 128, width), Discriminator(image_size, width))
        self.real = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
        if channels_last:
            self.task.to(memory_format=torch.channels_last)
            self.real = self.real.contiguous(memory_format=torch.channels_last)
        self.opt_d, self.opt_g = self.task.configure_optimizers()
        self.times: list[float] = []
        self.step()  # warm-up

    def step(self) -> float:
        start = time.perf_counter()
        task = self.task
        fake = task.generator(task.noise(len(self.real)))
        loss_d, _ = task.discriminator_step_loss(self.real, fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        loss_g = task.generator_step_loss(fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=64, help="64: the course's networks")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = {"contiguous": GANStep(args.image_size, args.width, args.batch_size, channels_last=False),
               "channels_last": GANStep(args.image_size, args.width, args.batch_size, channels_last=True)}
    for _ in range(args.steps):
        for config in configs.values():
            config.times.append(config.step())
    median = {name: statistics.median(c.times) for name, c in configs.items()}
    print(json.dumps({
        "bench": "gan", "image_size": args.image_size, "batch_size": args.batch_size, "width": args.width,
        "threads": torch.get_num_threads(), "steps": args.steps,
        "step_ms": {name: round(1000 * m, 1) for name, m in median.items()},
        "channels_last_speedup": round(median["contiguous"] / median["channels_last"], 3),
        "step_spread": {name: round((max(c.times) - min(c.times)) / median[name], 3) for name, c in configs.items()},
    }))


if __name__ == "__main__":
    main()
