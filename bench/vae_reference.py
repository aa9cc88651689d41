"""hw_autoencoder's VAE against the MLP VAE of pytorch/examples (784-400-20, BCE + KL), given the
same CPU time on the same training digits and scored on the same held-out digits.

    OMP_NUM_THREADS=1 python bench/vae_reference.py [--epochs N | --seconds S] [--seeds K]

Our VAE is trained by ``python -m hw_autoencoder.train --model vae`` (its recipe, or
``--epochs``, or ``--time-limit S/60`` with ``--seconds S``); the CPU time that whole command
used (loading and scoring included, a margin in the reference's favour; at least ``S``) is then
the reference's budget: it trains as pytorch/examples' ``vae/main.py`` does (Adam lr 1e-3,
batches of 128 reshuffled each epoch, the BCE + KLD summed over the batch, a sample of z in
every forward pass) until that many CPU seconds have passed. CPU time, not wall time, so that
other jobs on a shared machine do not tilt the comparison. Both are scored with the same
one-sample estimate of the negative ELBO in nats per image (``score_vae``) on the 2000 held-out
digits of split seed 0. ``--seeds K`` repeats both with seeds 0..K-1 (``--first-seed F``:
F..F+K-1, to run seeds in parallel processes). Prints one JSON line.
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
        return bce + kld                   # summed over the batch, as pytorch/examples does


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


def train_ours(source, seed: int, epochs: int | None, seconds: float | None) -> tuple[dict, float]:
    """``python -m hw_autoencoder.train --model vae`` (its recipe; ``--epochs``, or
    ``--time-limit`` for a wall-clock budget), its metrics and the CPU seconds it used."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        argv = ["--model", "vae", "--seed", str(seed), "--run-dir", os.path.join(tmp, "vae")]
        argv += ["--data-dir", str(source.root)] if source.root else []
        argv += ["--epochs", str(epochs)] if epochs else []
        argv += ["--time-limit", str(seconds / 60)] if seconds else []
        start = time.process_time()
        metrics = train_main(argv)
        return metrics, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="our VAE's epochs (default: its recipe)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="a budget instead: our VAE gets this many seconds of wall time (--time-limit), "
                             "the reference as many CPU seconds (at least the CPU time ours used)")
    parser.add_argument("--seeds", type=int, default=1, help="repeat with this many seeds (both models)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first of the seeds")
    parser.add_argument("--reference-seconds", type=float, default=None,
                        help="train only the reference, for this many CPU seconds")
    args = parser.parse_args()
    source = resolve_data_root("mnist", None, "scikit-learn's digits (built-in)", announce=False)
    data = builtin_digits() if source.builtin else load_digits(source.root)
    train_ix, _, test_ix = split_indices(len(data), 0)
    train, test = data.subset(train_ix), data.subset(test_ix)

    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if args.reference_seconds:
            ours, cpu_seconds = {}, args.reference_seconds
        else:
            ours, cpu_seconds = train_ours(source, seed, args.epochs, args.seconds)
            cpu_seconds = max(cpu_seconds, args.seconds or 0)
        reference, reference_epochs = train_reference(train.images, cpu_seconds, seed)
        theirs = score_vae(reference, test)
        rows.append({"seed": seed, "cpu_seconds": round(cpu_seconds, 1), "ours_nelbo": round(ours.get("test_nelbo", float("nan")), 2),
                     "ours_rec": round(ours.get("test_rec", float("nan")), 2),
                     "ours_kl": round(ours.get("test_kl", float("nan")), 2), "ours_epochs": ours.get("epochs", 0),
                     "reference_nelbo": round(theirs["nelbo"], 2), "reference_rec": round(theirs["rec"], 2),
                     "reference_kl": round(theirs["kl"], 2), "reference_epochs": reference_epochs})
    mean = {key: round(sum(row[key] for row in rows) / len(rows), 2) for key in ("ours_nelbo", "reference_nelbo")}
    print(json.dumps({
        "data": "MNIST" if source.root else "built-in digits", "train_images": len(train), "test_images": len(test),
        "threads": torch.get_num_threads(), "seeds": [row["seed"] for row in rows], **{f"mean_{k}": v for k, v in mean.items()},
        "mean_nelbo_difference": round(mean["reference_nelbo"] - mean["ours_nelbo"], 2), "runs": rows,
    }))


if __name__ == "__main__":
    main()
