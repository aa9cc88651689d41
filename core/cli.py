"""Shared command-line conventions: argument groups, config files and the run folder.

Every homework command is built the same way::

    parser = cli.make_parser("hw_segment.train", "Train a segmentation model on PH2.")
    cli.add_data_args(parser)
    cli.add_training_args(parser, epochs=20, batch_size=25, lr=1e-3)
    parser.add_argument("--loss", ...)          # the homework's own options
    args = cli.parse_args(parser)               # --config FILE sets defaults first
    run = cli.RunDir.create("hw_segment", args) # runs/hw_segment/<name>/ + args.json

``--config FILE`` (JSON or YAML) sets defaults; flags given on the command line still win,
and the final arguments are saved as ``args.json`` in the run folder (as in timm's train.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .device import broadcast_object, is_main_process, pick_device
from .errors import UserError

RUNS_ROOT_ENV = "DLS_RUNS"


def run_command(main: Callable[[], int | None]) -> None:
    """Run a command's ``main()`` the way every command runs.

    A :class:`~core.errors.UserError` (bad input or option) is printed as one line,
    ``error: <message>``, with exit status 2; Ctrl-C exits with status 130. Use it as::

        if __name__ == "__main__":
            cli.run_command(main)
    """
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless X is None or the help already
    says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that shows defaults in ``--help`` and accepts ``--config``."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=description,
                                     formatter_class=_DefaultsFormatter)
    parser.add_argument("--config", type=str, default=None,
                        help="JSON or YAML file whose keys set argument defaults")
    return parser


def add_data_args(parser: argparse.ArgumentParser, loader: bool = True) -> argparse._ArgumentGroup:
    """``--data-dir``, and ``--num-workers`` for homeworks that read through a DataLoader."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", type=str, default=None,
                       help="dataset root; default $DLS_DATA/<dataset>, else the built-in data")
    if loader:
        group.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    return group


def add_training_args(parser: argparse.ArgumentParser, *, epochs: int = 10, batch_size: int = 32,
                      lr: float = 1e-3) -> argparse._ArgumentGroup:
    """The options every :class:`core.trainer.Trainer` run understands."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs, help="number of epochs")
    group.add_argument("--batch-size", type=int, default=batch_size,
                       help="batch size per process (per GPU under torchrun)")
    group.add_argument("--lr", type=float, default=lr, help="learning rate")
    group.add_argument("--seed", type=int, default=42, help="random seed")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels: same seed, same weights (slower)")
    group.add_argument("--device", type=str, default="auto",
                       help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    group.add_argument("--precision", type=str, default="auto", choices=["auto", "32", "bf16", "16"],
                       help="autocast dtype; auto = bf16/fp16 on CUDA, fp32 elsewhere")
    group.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this value")
    group.add_argument("--accumulate", type=int, default=1, help="accumulate gradients over this many batches")
    group.add_argument("--patience", type=int, default=None,
                       help="early stopping: epochs without improvement before stopping")
    group.add_argument("--limit-batches", type=int, default=None,
                       help="use at most this many batches per epoch (train and val)")
    group.add_argument("--dry-run", action="store_true", help="one epoch of two batches, to check the pipeline")
    group.add_argument("--resume", type=str, default=None,
                       help="checkpoint to resume from (e.g. runs/<hw>/<name>/last.pt)")
    add_run_args(parser)
    return group


def add_run_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--run-dir`` / ``--run-name``: where the run's files go."""
    group = parser.add_argument_group("outputs")
    group.add_argument("--run-dir", type=str, default=None,
                       help="write the run exactly here (default runs/<homework>/<run-name>)")
    group.add_argument("--run-name", type=str, default=None,
                       help="name of the run folder (default: a timestamp)")
    return group


def load_config(path: str | os.PathLike) -> dict:
    """Read a JSON or YAML config file into a flat dict of argument defaults."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"error: --config {path}: file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:
        raise SystemExit(f"error: --config {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise SystemExit(f"error: --config {path}: expected a mapping of argument names to values")
    return {key.replace("-", "_"): value for key, value in data.items()}


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults that the command line overrides.

    Unknown keys in the config file are an error, so a typo does not pass silently.
    """
    pre, _ = parser.parse_known_args(argv)
    if getattr(pre, "config", None):
        config = load_config(pre.config)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            parser.error(f"--config {pre.config}: unknown option(s) {', '.join(unknown)}")
        parser.set_defaults(**config)
    args = parser.parse_args(argv)
    if getattr(args, "dry_run", False):
        args.epochs = 1
        args.limit_batches = 2
    return args


class RunDir:
    """The folder a run writes to: ``runs/<homework>/<name>/`` or exactly ``--run-dir``.

    Holds ``args.json``, ``history.csv``, ``best.pt``/``last.pt``, ``plots/*.png``,
    ``metrics.json`` and, where the homework has one, ``submission.csv``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, homework: str, args: argparse.Namespace | None = None, name: str | None = None) -> "RunDir":
        """Make the run folder (on rank 0) and save the arguments in it as ``args.json``, with
        ``"homework"`` (which package wrote the run: see :mod:`core.predictor`)."""
        run_dir = getattr(args, "run_dir", None) if args is not None else None
        if run_dir:
            path = Path(run_dir)
        else:
            name = name or (getattr(args, "run_name", None) if args is not None else None)
            if not name:  # under torchrun every process must agree on the timestamp: rank 0's is used
                device = pick_device(getattr(args, "device", "auto"))
                name = broadcast_object(time.strftime("%Y%m%d-%H%M%S"), device)
            path = Path(os.environ.get(RUNS_ROOT_ENV, "runs")) / homework / name
        run = cls(path)
        if is_main_process():
            run.plots.mkdir(parents=True, exist_ok=True)
            if args is not None:
                run.save_json("args.json", {**vars(args), "homework": homework, "command": " ".join(sys.argv)})
        return run

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def save_json(self, name: str, data: dict) -> Path:
        """Write ``data`` as indented JSON (paths and NumPy scalars become plain values).
        Under DDP only rank 0 writes."""
        target = self.path / name
        if not is_main_process():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        return target

    def save_metrics(self, metrics: dict) -> Path:
        """Write the final metrics as flat ``{"name": number}`` JSON (``metrics.json``)."""
        flat = {}
        for key, value in metrics.items():
            if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # NumPy / torch scalars
                value = value.item()
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"metrics.json: {key!r} is {value!r}, expected a number")
            flat[key] = None if isinstance(value, float) and math.isnan(value) else value
        return self.save_json("metrics.json", flat)

    def summary(self, metrics: dict | None = None) -> None:
        """Print the closing lines: where the files are, and the final metrics."""
        if not is_main_process():
            return
        print(f"run folder: {self.path}")
        files = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        if files:
            print("  files: " + ", ".join(files))
        if metrics:
            print("  metrics: " + "  ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # NumPy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
