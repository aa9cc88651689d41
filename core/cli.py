"""Shared command-line conventions: argument groups, option checks, config files, the run folder
and the one error path every command goes through.

A command is built the same way in every homework::

    def main(argv: list[str] | None = None) -> dict:
        parser = cli.make_parser("hw_x.train", "Train ... on ...")
        cli.add_data_args(parser)                       # --data-dir, --num-workers
        cli.add_training_args(parser, epochs=20, batch_size=25, lr=1e-3)   # also --run-dir/--run-name/--overwrite
        parser.add_argument("--width", type=cli.positive_int, default=16)  # checked while parsing
        args = cli.parse_args(parser, argv)             # --config FILE sets defaults; all values checked
        ...                                             # load the data: raise UserError / DataError on bad input
        run = cli.RunDir.reserve("hw_x", args)          # the folder, created empty; nothing written yet
        trainer = Trainer.from_args(args, run_dir=run.path, callbacks=[run.start_callback(args)])
        trainer.fit(task, train_loader, val_loader, resume=args.resume)   # args.json once the run starts
        run.save_metrics(metrics)
        run.summary(metrics)

    if __name__ == "__main__":
        cli.run_command(main)

A command without a Trainer checks its options and reads its data, then calls
``run = cli.RunDir.create("hw_x", args)`` (= ``reserve`` + ``run.start(args)``, which writes
``args.json``) before its real work, so that an unwritable folder stops it before that work.

Bad option values stop the command with one argparse-style line (``prog: error: argument
--epochs: expected an integer >= 1, got '0'``, exit status 2) before any work: give options a
checking ``type`` (:func:`positive_int`, :func:`nonneg_int`, :func:`int_at_least`,
:func:`positive_float`, :func:`nonneg_float`, :func:`probability`, :func:`n_jobs`,
:func:`device_name`, :func:`existing_file`, :func:`run_name`) or ``choices``; values from
``--config`` go through the same checks. A problem found later (a file, a value that depends on
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
import itertools
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from .device import broadcast_object, is_main_process, pick_device
from .errors import UserError

RUNS_ROOT_ENV = "DLS_RUNS"
ARGS_FILE = "args.json"
RECORD_KEYS = ("homework", "command")  # written into args.json beside the options
_unstarted: set[Path] = set()  # run folders this process created and has not started yet


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
        _remove_unstarted()
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        _remove_unstarted()
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    raise SystemExit(0)


def _remove_unstarted() -> None:
    """Delete the run folders this process created and never started, if still without files."""
    while _unstarted:
        path = _unstarted.pop()
        if path.is_dir() and not _holds_files(path):
            shutil.rmtree(path, ignore_errors=True)


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
    without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A parser that shows defaults in ``--help``, accepts ``--config`` and reports a bad value
    in one line."""
    parser = CommandParser(prog=f"python -m {prog}", description=description, formatter_class=_DefaultsFormatter)
    parser.add_argument("--config", type=str, default=None,
                        help="JSON or YAML file whose keys set argument defaults")
    return parser


def add_data_args(parser: argparse.ArgumentParser, loader: bool = True) -> argparse._ArgumentGroup:
    """``--data-dir``, and ``--num-workers`` for homeworks that read through a DataLoader."""
    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", type=str, default=None,
                       help="dataset root; default $DLS_DATA/<dataset>, else the built-in data")
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
                       help="fit the number of epochs and the LR schedule to this many minutes of training, "
                            "from the first epoch's time (--epochs then only sizes the first epoch's schedule)")
    group.add_argument("--dry-run", action="store_true", help="one epoch of two batches, to check the pipeline")
    group.add_argument("--resume", type=existing_file, default=None,
                       help="checkpoint to resume from (e.g. runs/<hw>/<name>/last.pt); with --run-dir set "
                            "to that checkpoint's folder the run continues there")
    add_run_args(parser)
    return group


def add_run_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--run-dir`` / ``--run-name`` (where the run's files go) and ``--overwrite``."""
    group = parser.add_argument_group("outputs")
    group.add_argument("--run-dir", type=str, default=None,
                       help="write the run exactly here (default runs/<homework>/<run-name>)")
    group.add_argument("--run-name", type=run_name, default=None,
                       help="name of the run folder (default: a timestamp, made unique)")
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

def runs_root() -> Path:
    """Where default run folders go: ``$DLS_RUNS``, else ``runs`` in the current folder."""
    return Path(os.environ.get(RUNS_ROOT_ENV, "runs"))


def recipe_epilog(recipes: dict[str, dict]) -> str:
    """The ``--help`` epilog listing each recipe's values, for commands whose options left
    at None take a recipe chosen by the data (built-in or real) or the model."""
    return "options left unset take the recipe's value: " + "; ".join(
        f"{name}: " + ", ".join(f"{k}={v}" for k, v in recipe.items()) for name, recipe in recipes.items())


def make_recipe_parser(prog: str, description: str, recipes: dict[str, dict]) -> argparse.ArgumentParser:
    """:func:`make_parser` for a training command whose epochs, batch size and learning rate
    default to a recipe: the data and training options (those three left at None for
    :func:`apply_recipe`) and the recipes listed in ``--help`` (:func:`recipe_epilog`)."""
    parser = make_parser(prog, description)
    parser.epilog = recipe_epilog(recipes)
    add_data_args(parser)
    add_training_args(parser, epochs=None, batch_size=None, lr=None)
    return parser


def apply_recipe(args: argparse.Namespace, recipe: dict, skip: tuple[str, ...] = ()) -> dict:
    """Set each option of ``recipe`` (except ``skip``) that the user left at None to the
    recipe's value; return the recipe's options with their final values (for the printed line)."""
    for key, value in recipe.items():
        if key not in skip and getattr(args, key, None) is None:
            setattr(args, key, value)
    return {key: getattr(args, key, None) for key in recipe}


class RunDir:
    """The folder a run writes to: ``runs/<homework>/<name>/`` or exactly ``--run-dir``.

    Holds ``args.json`` (written when the run starts), ``history.csv``, ``best.pt``/``last.pt``,
    ``plots/*.png``, ``metrics.json`` and, where the homework has one, ``submission.csv``.
    A folder is never reused silently: see :meth:`reserve`.
    """

    def __init__(self, path: str | os.PathLike, homework: str | None = None):
        self.path = Path(path)
        self.homework = homework

    @classmethod
    def reserve(cls, homework: str, args: argparse.Namespace | None = None, *, name: str | None = None,
                parent: str | os.PathLike | None = None, prefix: str = "") -> "RunDir":
        """Claim the run folder and create it (with ``plots/``), writing nothing else.

        The folder is ``args.run_dir`` if given, else ``<parent>/<args.run_name or name>``, else
        ``<parent>/<prefix><timestamp>`` made unique with ``-2``, ``-3`` ... (``parent``
        defaults to ``runs/<homework>``). A named folder that is not empty is refused unless
        ``args.resume`` is a checkpoint inside it (or ``True``: the command continues its
        own run there) or ``args.overwrite`` is set and it holds a run (``args.json``), in
        which case it is emptied first. Under ``torchrun`` rank 0 decides; every rank gets
        the same folder or the same error.

        Raises:
            UserError: the folder holds a run, is not a folder, or cannot be written.
        """
        device = pick_device(getattr(args, "device", None) or "auto")
        decision = (None, None)
        if is_main_process():
            try:
                path, created = _claim(homework, args, name, parent, prefix)
                decision = (str(path), None)
                if created:
                    _unstarted.add(path)
            except UserError as exc:
                decision = (None, str(exc))
        path, error = broadcast_object(decision, device)
        if error is not None:
            raise UserError(error)
        return cls(path, homework)

    @classmethod
    def create(cls, homework: str, args: argparse.Namespace | None = None, *, name: str | None = None,
               parent: str | os.PathLike | None = None, prefix: str = "") -> "RunDir":
        """:meth:`reserve` the folder and :meth:`start` the run in it (``args.json``) at once:
        for commands that have checked everything by the time they call it."""
        run = cls.reserve(homework, args, name=name, parent=parent, prefix=prefix)
        if args is not None:
            run.start(args)
        return run

    def start(self, args: argparse.Namespace) -> Path:
        """The run really starts: save the final arguments as ``args.json`` (rank 0 only), with
        ``"homework"`` (which package wrote the run: see :mod:`core.predictor`) and the command."""
        _unstarted.discard(self.path)
        return self.save_json(ARGS_FILE, {**vars(args), "homework": self.homework, "command": " ".join(sys.argv)})

    def start_callback(self, args: argparse.Namespace):
        """A Trainer callback that calls :meth:`start` when ``fit`` starts, i.e. after a
        ``--resume`` checkpoint has been read: a failed resume leaves ``args.json`` alone."""
        from .callbacks import Callback

        run = self

        class StartRun(Callback):
            order = 1000  # after the built-in callbacks, so their saved-state keys do not move

            def on_fit_start(self, trainer, task) -> None:
                run.start(args)

        return StartRun()

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
        """Write ``data`` as indented JSON, atomically (paths and NumPy scalars become plain
        values). Under DDP only rank 0 writes."""
        target = self.path / name
        if not is_main_process():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, target)
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


def _claim(homework: str, args, name: str | None, parent, prefix: str) -> tuple[Path, bool]:
    """Rank 0's half of :meth:`RunDir.reserve`: pick, check and create the folder; also
    whether it was created now."""
    root = Path(parent) if parent is not None else runs_root() / homework
    run_dir = getattr(args, "run_dir", None)
    chosen = getattr(args, "run_name", None) or name
    if run_dir:
        path, flag = Path(run_dir).expanduser(), f"--run-dir {run_dir}"
    elif chosen:
        path, flag = root / chosen, f"--run-name {chosen} ({root / chosen})"
    else:
        return _claim_unique(root, prefix), True
    _check_named(path, flag, getattr(args, "resume", None), bool(getattr(args, "overwrite", False)))
    created = not path.exists()
    _make_folder(path, flag, exist_ok=True)
    return path, created


def _claim_unique(root: Path, prefix: str) -> Path:
    """``root/<prefix><timestamp>``, or with ``-2``, ``-3`` ... when a run started in the same
    second already took it; ``mkdir`` without ``exist_ok`` makes the claim atomic."""
    _make_folder(root, str(root), exist_ok=True, plots=False)
    stamp = prefix + time.strftime("%Y%m%d-%H%M%S")
    for i in itertools.count(1):
        path = root / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            _make_folder(path, str(path), exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _make_folder(path: Path, flag: str, exist_ok: bool, plots: bool = True) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
        if plots:
            (path / "plots").mkdir(exist_ok=True)
    except FileExistsError:
        if not exist_ok:
            raise
        raise UserError(f"{flag}: exists and is not a folder") from None
    except OSError as exc:
        raise UserError(f"{flag}: cannot create the run folder ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag}: the folder is not writable")


def _check_named(path: Path, flag: str, resume, overwrite: bool) -> None:
    """Refuse a named folder that is not empty, unless the run resumes there or overwrites it."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag}: exists and is not a folder")
    if not path.is_dir() or not _holds_files(path):
        return
    resumes_here = resume is True or (
        isinstance(resume, (str, os.PathLike)) and Path(resume).expanduser().resolve().parent == path.resolve())
    holds_run = (path / ARGS_FILE).is_file()
    if resumes_here and overwrite:
        raise UserError(f"{flag}: --overwrite would delete the run that --resume continues; give one of them")
    if resumes_here:
        return
    if overwrite and holds_run:
        _empty_folder(path, flag)
        return
    if overwrite:
        raise UserError(f"{flag}: the folder is not empty and holds no {ARGS_FILE}, so it is not a run folder; "
                        "--overwrite only replaces a run: choose a new or empty folder")
    what = "holds a run" if holds_run else "is not empty"
    raise UserError(f"{flag}: the folder already {what}; choose another --run-name/--run-dir, "
                    "--resume its last.pt to continue it, or add --overwrite to replace it")


def _holds_files(path: Path) -> bool:
    """Whether ``path`` holds any file (an empty ``plots/`` left by an unstarted run does not count)."""
    return any(not p.is_dir() for p in path.rglob("*"))


def _empty_folder(path: Path, flag: str) -> None:
    try:
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    except OSError as exc:
        raise UserError(f"{flag}: cannot empty the folder for --overwrite ({exc})") from None


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
