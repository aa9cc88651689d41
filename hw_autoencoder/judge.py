"""The independent judge of the CVAE's samples: a small convolutional digit classifier trained
on real digits only (never on samples), about 98 % accurate on held-out MNIST digits.

Two 3x3 convolutions with max pooling and a hidden layer (LeNet's shape, LeCun et al. 1998),
trained a few epochs with Adam on the digits moved by up to ``shift`` pixels (so a sample
drawn a little off-centre is still read).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.console import echo

from .data import random_shifts


class DigitNet(nn.Module):
    """28x28 grey digit -> 10 logits."""

    def __init__(self, width: int = 16, hidden: int = 128, classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_digit_classifier(images: torch.Tensor, labels: torch.Tensor, steps: int = 700, seed: int = 0,
                           shift: int = 2, batch_size: int = 64, lr: float = 2e-3) -> DigitNet:
    """A :class:`DigitNet` fitted to real ``images`` (N, 1, 28, 28) in [0, 1] and their
    ``labels``: Adam, cross-entropy, a cosine learning rate, whole epochs of about ``steps``
    batches in all (6 epochs of 7200 digits; more on a small set). Seeded: the same digits
    give the same judge."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitNet()
    per_epoch = -(-len(images) // batch_size)
    epochs = max(1, round(steps / per_epoch))
    steps = epochs * per_epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            x = random_shifts(images[batch], shift, generator) if shift else images[batch]
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def classify(model: DigitNet, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted digit of each image (N, 1, 28, 28)."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size].float()).argmax(1) for i in range(0, len(images), batch_size)])


def digit_judge(train_images: torch.Tensor, train_labels: torch.Tensor, seed: int = 0, steps: int = 700) -> DigitNet:
    """The judge of :func:`hw_autoencoder.evaluate.score_cvae_samples`, announced in one line."""
    echo(f"judge: a small CNN trained on the {len(train_images)} real training digits (seed {seed})")
    return train_digit_classifier(train_images, train_labels, steps, seed)
