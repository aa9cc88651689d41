"""hw_autoencoder's VAE against the MLP VAE of pytorch/examples (784-400-20, BCE + KL), given the
same CPU time on the same training digits and scored on the same held-out digits.

    OMP_NUM_THREADS=1 python bench/vae_reference.py [--epochs N]

Our VAE is trained by ``python -m hw_autoencoder.train --model vae`` (its recipe, or
``--epochs``); the CPU time that whole command used (loading and scoring included, a margin in
the reference's favour) is then the reference's budget: it trains with Adam (lr 1e-3, batch
128, as in pytorch/examples) until that many CPU seconds have passed. CPU time, not wall time,
so that other jobs on a shared machine do not tilt the comparison. Both are scored with the
same one-sample estimate of the negative ELBO in nats per image (``score_vae``). Prints one
JSON line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from core.data import resolve_data_root
from hw_autoencoder.data import builtin_digits, load_digits, split_indices
from hw_autoencoder.evaluate import score_vae
from hw_autoencoder.train import main as train_main


class ReferenceVAE(nn.Module):
    """The MLP VAE of pytorch/examples' ``vae/main.py``: 784-400-(20, 20), 20-400-784, ReLU,
    sigmoid output, Bernoulli likelihood. Wrapped in this project's VAE interface
    (``encode -> (mu, logsigma)``, ``decode``) so the same scorer reads it."""

    conditional = False

    def __init__(self, latent: int = 20):
        super().__init__()
        self.latent = latent
        self.fc1, self.fc_mu, self.fc_logvar = nn.Linear(784, 400), nn.Linear(400, latent), nn.Linear(400, latent)
        self.fc3, self.fc4 = nn.Linear(latent, 400), nn.Linear(400, 784)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.flatten(1)))
        return self.fc_mu(h), 0.5 * self.fc_logvar(h)      # log sigma = log(variance) / 2

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))).view(-1, 1, 28, 28)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, logsigma = self.encode(x)
        z = mu + torch.exp(logsigma) * torch.randn_like(mu)
        bce = F.binary_cross_entropy(self.decode(z), x, reduction="sum")
        kld = -0.5 * torch.sum(1 + 2 * logsigma - mu.pow(2) - torch.exp(2 * logsigma))
        return (bce + kld) / len(x)


def train_reference(images: torch.Tensor, cpu_seconds: float, seed: int = 0) -> tuple[ReferenceVAE, int]:
    """Train until ``cpu_seconds`` of this process's CPU time are spent; returns the model and
    the number of epochs begun."""
    torch.manual_seed(seed)
    model = ReferenceVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, epochs = time.process_time(), 0
    while time.process_time() - start < cpu_seconds:
        epochs += 1
        model.train()
        for batch in torch.randperm(len(images)).split(128):
            loss = model.loss(images[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if time.process_time() - start >= cpu_seconds:
                break
    return model.eval(), epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="our VAE's epochs (default: its recipe)")
    parser.add_argument("--reference-seconds", type=float, default=None,
                        help="train only the reference, for this many CPU seconds")
    args = parser.parse_args()
    source = resolve_data_root("mnist", None, "scikit-learn's digits (built-in)", announce=False)
    data = builtin_digits() if source.builtin else load_digits(source.root)
    train_ix, _, test_ix = split_indices(len(data), 0)
    train, test = data.subset(train_ix), data.subset(test_ix)

    if args.reference_seconds:
        ours, cpu_seconds = {"test_nelbo": float("nan"), "test_rec": float("nan"), "test_kl": float("nan"),
                             "epochs": 0}, args.reference_seconds
    else:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
            argv = ["--model", "vae", "--run-dir", os.path.join(tmp, "vae")]
            argv += ["--data-dir", str(source.root)] if source.root else []
            argv += ["--epochs", str(args.epochs)] if args.epochs else []
            start = time.process_time()
            ours = train_main(argv)
            cpu_seconds = time.process_time() - start
    reference, reference_epochs = train_reference(train.images, cpu_seconds)
    theirs = score_vae(reference, test)
    print(json.dumps({
        "data": "MNIST" if source.root else "built-in digits", "train_images": len(train), "test_images": len(test),
        "threads": torch.get_num_threads(), "cpu_seconds_each": round(cpu_seconds, 1),
        "ours_nelbo": round(ours["test_nelbo"], 2), "ours_rec": round(ours["test_rec"], 2),
        "ours_kl": round(ours["test_kl"], 2), "ours_epochs": ours["epochs"],
        "reference_nelbo": round(theirs["nelbo"], 2), "reference_rec": round(theirs["rec"], 2),
        "reference_kl": round(theirs["kl"], 2), "reference_epochs": reference_epochs,
        "nelbo_difference": round(theirs["nelbo"] - ours["test_nelbo"], 2),
    }))


if __name__ == "__main__":
    main()
