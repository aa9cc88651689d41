"""Speed of one hw_gan training step on this machine: one JSON line.

    python bench/gan.py [--image-size 64] [--batch-size 128] [--width 64] [--steps 5] [--threads N]
    python bench/gan.py --recipe default        # the default recipe's networks and batch

A step is what ``GANTask.training_step`` does per batch: one generator forward pass, a
discriminator step on real and fake images, a generator step through the frozen
discriminator (Adam for both). ``step_ms`` holds the median time of ``--steps`` timed steps
(after one warm-up) in three configurations: the default (contiguous) memory format,
channels-last, and channels-last under bfloat16 autocast. ``channels_last_speedup`` is
contiguous / channels-last, ``bf16_speedup`` channels-last fp32 / bf16 (``native_bf16`` says
whether the CPU has bf16 instructions; without them bf16 is emulated and slow). The
configurations take turns step by step, so a change in the machine's load hits them alike;
``step_spread`` ((max - min) / median) says how noisy the figures were. Defaults: the course's
networks (width 64, BCE, no augmentation) at 64 px, batch 128; ``--recipe default`` times the
default recipe (width 32, batch 64, DiffAugment, nearest-neighbour upsampling in the generator).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from core.device import native_bf16
from hw_gan.augment import parse_policy
from hw_gan.models import Discriminator, Generator
from hw_gan.task import GANTask
from hw_gan.train import RECIPES


class GANStep:
    """A GAN task, its two optimisers and a real batch, ready to time training steps."""

    def __init__(self, image_size: int, width: int, batch_size: int, channels_last: bool,
                 recipe: dict | None = None, bf16: bool = False):
        torch.manual_seed(0)
        recipe = recipe or RECIPES["course"]
        self.task = GANTask(Generator(image_size, 128, width, recipe["upsample"]),
                            Discriminator(image_size, width, spectral=recipe["spectral_norm"]),
                            loss=recipe["loss"], augment=parse_policy(recipe["augment"]))
        self.bf16 = bf16
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
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        with autocast:
            fake = task.generator(task.noise(len(self.real)))
            loss_d, _ = task.discriminator_step_loss(self.real, fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        with autocast:
            loss_g = task.generator_step_loss(fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="course",
                        help="loss, spectral norm and augmentation, and the defaults of the next three")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--width", type=int, default=None, help="64: the course's networks")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    for key in ("image_size", "batch_size", "width"):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    shape = (args.image_size, args.width, args.batch_size)
    configs = {"contiguous": GANStep(*shape, channels_last=False, recipe=recipe),
               "channels_last": GANStep(*shape, channels_last=True, recipe=recipe),
               "channels_last_bf16": GANStep(*shape, channels_last=True, recipe=recipe, bf16=True)}
    for _ in range(args.steps):
        for config in configs.values():
            config.times.append(config.step())
    median = {name: statistics.median(c.times) for name, c in configs.items()}
    print(json.dumps({
        "bench": "gan", "recipe": args.recipe, "native_bf16": native_bf16(), "image_size": args.image_size, "batch_size": args.batch_size, "width": args.width,
        "threads": torch.get_num_threads(), "steps": args.steps,
        "step_ms": {name: round(1000 * m, 1) for name, m in median.items()},
        "channels_last_speedup": round(median["contiguous"] / median["channels_last"], 3),
        "bf16_speedup": round(median["channels_last"] / median["channels_last_bf16"], 3),
        "step_spread": {name: round((max(c.times) - min(c.times)) / median[name], 3) for name, c in configs.items()},
    }))


if __name__ == "__main__":
    main()
