"""Shared command-line conventions: argument groups, option checks, config files, the run folder
and the one error path every command goes through.

A command is built the same way in every homework::

    def main(argv: list[str] | None = None) -> dict:
        parser = cli.make_parser("hw_x.train", "Train ... on ...")
        cli.add_data_args(parser, "x")                  # --data-dir ($DLS_DATA/x), --num-workers
        cli.add_training_args(parser, epochs=20, batch_size=25, lr=1e-3)   # also --run-dir/--run-name/--overwrite
        parser.add_argument("--width", type=cli.positive_int, default=16)  # checked while parsing
        args = cli.parse_args(parser, argv)             # --config FILE sets defaults; all values checked
        ...                                             # load the data: raise UserError / DataError on bad input
        run = RunDir.reserve("hw_x", args)              # core.runs: the folder, created empty
        trainer = cli.build_trainer(args, run_dir=run.path, callbacks=[run.start_callback(args)])
        trainer.fit(task, train_loader, val_loader, resume=args.resume)   # args.json once the run starts
        run.save_metrics(metrics)
        run.summary(metrics)

    if __name__ == "__main__":
        cli.run_command(main)

A command without a Trainer checks its options and reads its data, then calls
``run = RunDir.create("hw_x", args)`` (:class:`core.runs.RunDir`) (= ``reserve`` + ``run.start(args)``, which writes
``args.json``) before its real work, so that an unwritable folder stops it before that work.

Bad option values stop the command with one argparse-style line (``prog: error: argument
--epochs: expected an integer >= 1, got '0'``, exit status 2) before any work: give options a
checking ``type`` (:func:`positive_int`, :func:`nonneg_int`, :func:`int_at_least`,
:func:`positive_float`, :func:`nonneg_float`, :func:`probability`, :func:`n_jobs`,
:func:`device_name`, :func:`existing_file`, :func:`run_name`, :func:`logger_names`) or
``choices``; values from ``--config`` go through the same checks. A problem found later (a file, a value that depends on
the data) is raised as :class:`core.errors.UserError` (or :class:`core.data.DataError`), which
:func:`run_command` prints as ``error: <message>`` with exit status 2.

The run folder is ``runs/<homework>/<timestamp>`` by default (``$DLS_RUNS`` instead of ``runs``),
unique even for runs started in the same second (``-2``, ``-3`` ... suffixes, claimed with an
atomic ``mkdir``; under ``torchrun`` rank 0 decides and every rank gets its answer).
``--run-name NAME`` / ``--run-dir DIR`` name it; a named folder that holds files is refused,
unless ``--resume`` reads a checkpoint inside it (the run continues there) or ``--overwrite``
is given (the folder must hold a run, i.e. an ``args.json``; it is emptied first).
``--config FILE`` (JSON or YAML) sets defaults; flags given on the command line still win, and
the final arguments are saved as ``args.json`` (as in timm's train.py), which works as a
``--config`` for a new run (give it a new ``--run-name``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from .device import pick_device
from .errors import UserError
from .runs import RECORD_KEYS, remove_unstarted



def run_command(main: Callable[..., object], argv: list[str] | None = None) -> None:
    """Run a command's ``main`` the way every command runs, and exit.

    A :class:`~core.errors.UserError` (bad input or option; :class:`core.data.DataError` is
    one) is printed as one line, ``error: <message>``, with exit status 2; Ctrl-C exits with
    status 130. Either way, a run folder the command created but never started (no file in
    it yet) is removed again. ``main`` is called with ``argv`` when it is given (tests), else
    with no argument. Use it as::

        if __name__ == "__main__":
            cli.run_command(main)
    """
    try:
        main() if argv is None else main(argv)
    except UserError as exc:
        remove_unstarted()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        remove_unstarted()
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    raise SystemExit(0)


# -- option checks: argparse `type=` functions ------------------------------------------------

def int_at_least(minimum: int) -> Callable[[str], int]:
    """A ``type=`` for integers ``>= minimum`` (e.g. ``int_at_least(2)`` for CV folds)."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    check.__name__ = f"int_at_least_{minimum}"
    return check


positive_int = int_at_least(1)
positive_int.__name__ = "positive_int"
nonneg_int = int_at_least(0)
nonneg_int.__name__ = "nonneg_int"


def _finite_float(text: str, expected: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number ``> 0`` (learning rates, clipping norms)."""
    value = _finite_float(text, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonneg_float(text: str) -> float:
    """A finite number ``>= 0`` (penalty coefficients)."""
    value = _finite_float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in ``[0, 1]`` (dropout, thresholds, fractions)."""
    value = _finite_float(text, "a number in [0, 1]")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def n_jobs(text: str) -> int:
    """scikit-learn's ``n_jobs``: ``-1`` for every core, else a positive number of processes."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value != -1 and value < 1:
        raise argparse.ArgumentTypeError(f"expected -1 (every core) or a number of processes >= 1, got {text!r}")
    return value


def device_name(text: str) -> str:
    """``auto`` or a device this machine has: ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    if text == "auto":
        return text
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    try:
        pick_device(text)
    except RuntimeError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def logger_names(text: str) -> str:
    """A comma-separated list of loggers (``--logger``), returned normalised (``tensorboard,csv``)."""
    from .loggers import parse_logger_names

    try:
        return ",".join(parse_logger_names(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def existing_file(text: str) -> str:
    """A path to an existing file (``--resume``, ``--data``)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: file not found")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: is a folder, expected a file")
    return str(path)


def run_name(text: str) -> str:
    """A folder name (no path separators): ``--run-name``."""
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"expected a folder name without '/', got {text!r} (use --run-dir for a path)")
    return text


def check_folds(folds: int, labels, option: str = "--folds") -> None:
    """Stratified K-fold needs every class to have at least ``folds`` rows.

    Raises:
        UserError: naming ``option``, the smallest class and its size.
    """
    import numpy as np

    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) < 2:
        raise UserError(f"{option} {folds}: the data has a single class ({classes.tolist()}), nothing to cross-validate")
    smallest = int(counts.argmin())
    label, count = classes.tolist()[smallest], int(counts[smallest])
    if count < folds:
        hint = f"use {option} {count} or less" if count >= 2 else "cross-validation needs 2 rows of every class"
        raise UserError(f"{option} {folds}: class {label!r} has only {count} row(s), fewer than the folds; {hint}")


# -- parser and shared groups -----------------------------------------------------------------

class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless X is None or the help already
    says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, ``prog: error: message`` (exit 2),
    without the usage block, and that takes options only by their full names (``--los`` is
    an error, not ``--loss``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser that shows defaults in ``--help``, accepts ``--config`` and reports a bad value
    in one line."""
    parser = CommandParser(prog=f"python -m {prog}", description=description, formatter_class=_DefaultsFormatter)
    parser.add_argument("--config", type=str, default=None,
                        help="JSON or YAML file whose keys set argument defaults")
    return parser


def add_data_args(parser: argparse.ArgumentParser, dataset: str, loader: bool = True) -> argparse._ArgumentGroup:
    """``--data-dir`` (its help names ``$DLS_DATA/<dataset>``), and ``--num-workers`` for
    homeworks that read through a DataLoader."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", type=str, default=None,
                       help=f"dataset root; default $DLS_DATA/{dataset}, else the built-in data")
    if loader:
        group.add_argument("--num-workers", type=nonneg_int, default=0, help="DataLoader worker processes")
    return group


def add_training_args(parser: argparse.ArgumentParser, *, epochs: int | None = 10, batch_size: int | None = 32,
                      lr: float | None = 1e-3) -> argparse._ArgumentGroup:
    """The options every :class:`core.trainer.Trainer` run understands, each checked while
    parsing; also adds :func:`add_run_args`."""
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=positive_int, default=epochs, help="number of epochs")
    group.add_argument("--batch-size", type=positive_int, default=batch_size,
                       help="batch size per process (per GPU under torchrun)")
    group.add_argument("--lr", type=positive_float, default=lr, help="learning rate")
    group.add_argument("--seed", type=int, default=42, help="random seed")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels: same seed, same weights (slower)")
    group.add_argument("--device", type=device_name, default="auto",
                       help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    group.add_argument("--threads", type=positive_int, default=None,
                       help="CPU threads for PyTorch's kernels (default: PyTorch's choice, one per core)")
    group.add_argument("--precision", type=str, default="auto", choices=["auto", "32", "bf16", "16"],
                       help="autocast dtype; auto = bf16/fp16 on CUDA, fp32 elsewhere")
    group.add_argument("--grad-clip", type=positive_float, default=None, help="clip the gradient norm to this value")
    group.add_argument("--accumulate", type=positive_int, default=1,
                       help="accumulate gradients over this many batches")
    group.add_argument("--patience", type=positive_int, default=None,
                       help="early stopping: epochs without improvement before stopping")
    group.add_argument("--limit-batches", type=positive_int, default=None,
                       help="use at most this many batches per epoch (train and val)")
    group.add_argument("--time-limit", type=positive_float, default=None, metavar="MINUTES",
                       help="end the command within this many minutes of its start (data loading counts): "
                            "the number of epochs and the LR schedule are fitted to the time left, from the "
                            "measured epoch time (--epochs then only sizes the first epoch's schedule)")
    group.add_argument("--dry-run", action="store_true", help="one epoch of two batches, to check the pipeline")
    group.add_argument("--logger", type=logger_names, default="tensorboard,csv",
                       help="where the run's curves go besides the terminal: 'tensorboard,csv' (TensorBoard event "
                            "files in the run folder, and history.csv) or 'csv' (history.csv only; also what "
                            "runs when the tensorboard package is not installed)")
    group.add_argument("--log-every", type=positive_int, default=50, metavar="STEPS",
                       help="write the training losses and learning rate to TensorBoard every this many "
                            "optimiser steps (averaged over them)")
    group.add_argument("--resume", type=existing_file, default=None,
                       help="checkpoint to resume from (e.g. runs/<hw>/<name>/last.pt); with --run-dir set "
                            "to that checkpoint's folder the run continues there")
    add_run_args(parser)
    return group


def add_run_args(parser: argparse.ArgumentParser, default: str = "runs/<homework>/<run-name>"
                 ) -> argparse._ArgumentGroup:
    """``--run-dir`` / ``--run-name`` (where the command's files go) and ``--overwrite``;
    ``default`` says in ``--help`` where they go otherwise."""
    group = parser.add_argument_group("outputs")
    group.add_argument("--run-dir", type=str, default=None,
                       help=f"write the outputs exactly here (default {default})")
    group.add_argument("--run-name", type=run_name, default=None,
                       help="name of the output folder, inside the default's parent (default: a timestamp, "
                            "made unique)")
    group.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --run-dir/--run-name (its files are deleted first)")
    return group


# -- config files and parsing -----------------------------------------------------------------

def load_config(path: str | os.PathLike) -> dict:
    """Read a JSON or YAML config file into a flat dict of argument defaults.

    Raises:
        UserError: the file is missing, cannot be parsed, or is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path}: file not found")
    try:
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:
        raise UserError(f"--config {path}: cannot parse ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping of argument names to values")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _config_value(action: argparse.Action, value):
    """``value`` from a config file, converted and checked as if it had been typed after the
    option's flag (argparse itself neither converts non-string defaults nor checks choices)."""
    if value is None:
        return None
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
        return value
    many = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    if isinstance(value, (list, tuple)) and not many:
        raise argparse.ArgumentTypeError(f"expected one value, got a list {value!r}")
    if isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a value, got a mapping {value!r}")
    if many:
        return [_config_value_one(action, item) for item in (value if isinstance(value, (list, tuple)) else [value])]
    return _config_value_one(action, value)


def _config_value_one(action: argparse.Action, value):
    text = value if isinstance(value, str) else json.dumps(value)
    converter = action.type or str
    try:
        value = converter(text)
    except (TypeError, ValueError):
        name = getattr(converter, "__name__", "")
        raise argparse.ArgumentTypeError(f"invalid {name} value: {text!r}") from None
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {value!r} (choose from {', '.join(map(repr, action.choices))})")
    return value


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; values from ``--config`` become defaults that the command line overrides.

    Every value, from the command line or the config file, goes through the option's ``type``
    and ``choices``; a bad one or an unknown config key stops here with one line (exit 2).
    """
    finder = argparse.ArgumentParser(add_help=False)  # only --config, so nothing else is parsed twice
    finder.add_argument("--config", default=None)
    pre, _ = finder.parse_known_args(argv)
    if pre.config:
        try:
            config = load_config(pre.config)
        except UserError as exc:
            parser.error(str(exc))
        actions = {action.dest: action for action in parser._actions if action.dest != "help"}
        for key in RECORD_KEYS:  # a run's args.json works as a config: what start() adds is not an option
            if key not in actions:
                config.pop(key, None)
        unknown = sorted(set(config) - set(actions))
        if unknown:
            parser.error(f"--config {pre.config}: unknown option(s) {', '.join(unknown)}")
        defaults = {}
        for key, value in config.items():
            try:
                defaults[key] = _config_value(actions[key], value)
            except argparse.ArgumentTypeError as exc:
                flag = actions[key].option_strings[-1] if actions[key].option_strings else key
                parser.error(f"--config {pre.config}: {key} (argument {flag}): {exc}")
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    if getattr(args, "dry_run", False):
        args.epochs = 1
        args.limit_batches = 2
    return args


# -- the run folder ---------------------------------------------------------------------------

def recipe_epilog(recipes: dict[str, dict]) -> str:
    """The ``--help`` epilog listing each recipe's values, for commands whose options left
    at None take a recipe chosen by the data (built-in or real) or the model."""
    return "options left unset take the recipe's value: " + "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()) for name, recipe in recipes.items())


def make_recipe_parser(prog: str, description: str, recipes: dict[str, dict], dataset: str) -> argparse.ArgumentParser:
    """:func:`make_parser` for a training command whose epochs, batch size and learning rate
    default to a recipe: the data and training options (those three left at None for
    :func:`apply_recipe`) and the recipes listed in ``--help`` (:func:`recipe_epilog`)."""
    parser = make_parser(prog, description)
    parser.epilog = recipe_epilog(recipes)
    add_data_args(parser, dataset)
    add_training_args(parser, epochs=None, batch_size=None, lr=None)
    return parser


def apply_recipe(args: argparse.Namespace, recipe: dict, skip: tuple[str, ...] = ()) -> dict:
    """Set each option of ``recipe`` (except ``skip``) that the user left at None to the
    recipe's value; return the recipe's options with their final values (for the printed line)."""
    for key, value in recipe.items():
        if key not in skip and getattr(args, key, None) is None:
            setattr(args, key, value)
    return {key: getattr(args, key, None) for key in recipe}


# -- building the Trainer from options ----------------------------------------------------------

def build_trainer(args: argparse.Namespace, run_dir=None, reserve_seconds: float = 0.0, **overrides):
    """A :class:`core.trainer.Trainer` from the options of :func:`add_training_args`;
    ``overrides`` are passed to it as they are (``monitor``, ``callbacks``...).

    ``--threads`` sets PyTorch's thread count for the process (the option asks for it).
    ``--time-limit`` counts from the command's start: the time already spent (imports,
    loading the data) and ``reserve_seconds`` (what the command does after training: saving
    the model, figures) are taken from the training budget; ``--dry-run`` ignores it.
    ``--logger`` / ``--log-every``: with a ``run_dir``, the loggers of
    :func:`core.loggers.make_loggers` are added to ``overrides["callbacks"]`` (TensorBoard
    gets ``vars(args)`` as the run's hparams); ``history.csv`` is the Trainer's own.
    """
    from .device import process_age
    from .loggers import DEFAULT_LOG_EVERY, DEFAULT_LOGGERS, make_loggers
    from .trainer import Trainer

    threads = getattr(args, "threads", None)
    if threads is not None:
        torch.set_num_threads(threads)
    time_limit = None if getattr(args, "dry_run", False) else getattr(args, "time_limit", None)
    if time_limit is not None:
        time_limit = max(time_limit / 20, time_limit - ((process_age() or 0.0) + reserve_seconds) / 60)
    kwargs = dict(max_epochs=args.epochs, run_dir=run_dir, device=args.device, precision=args.precision,
                  grad_clip=args.grad_clip, accumulate=args.accumulate, limit_batches=args.limit_batches,
                  seed=args.seed, deterministic=args.deterministic, patience=args.patience, time_limit=time_limit)
    kwargs.update(overrides)
    loggers = make_loggers(getattr(args, "logger", None) or DEFAULT_LOGGERS, kwargs.get("run_dir"),
                           log_every=getattr(args, "log_every", None) or DEFAULT_LOG_EVERY, hparams=vars(args))
    if loggers:
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), *loggers]
    return Trainer(**kwargs)

