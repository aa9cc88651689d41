"""A run's files: the run folder, its settings, its metrics and its one model file.

Every command that trains writes to a run folder, ``runs/<homework>/<timestamp>`` by default
(``$DLS_RUNS`` instead of ``runs``), or exactly ``--run-dir DIR``; see :class:`RunDir`:

    args.json       the final options (``"homework"`` and ``"command"`` beside them), written
                    once every option has been checked; it works as a ``--config`` file
    history.csv     one row of metrics per epoch
    best.pt last.pt the Trainer's full checkpoints, for ``--resume`` (:mod:`core.checkpoint`)
    model.pt        the trained model, for every command that reads the run (below)
    metrics.json    the final metrics, flat ``{"name": number}``
    plots/          the figures

The model file
    ``model.pt`` is written by :func:`save_model` and read by :func:`read_model`, weights-only
    (loading it cannot run code). It is one dict::

        {"format": "dls-cv/model", "version": 1,
         "homework": "hw_segment",            # the package that can rebuild it
         "kind": "segmentation",              # what the model does
         "config": {...},                     # plain values that rebuild the architecture
         "state_dict": {...},                 # its weights (the EMA average when the run kept one)
         "extras": {...}}                     # what using it needs: classes, preprocessing, alphabet...

    Each homework with a trained model has ``hw_<name>.load_model(run) -> LoadedModel``: it
    calls :func:`rebuild_model` with the function that builds its network from ``config``
    (:func:`read_model`, the network, ``state_dict`` loaded, eval mode on the CPU). Its
    evaluate, predict, sample and submit commands, and the web service, load a run through it
    alone; :func:`load_model` finds the homework of any run and calls it.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .checkpoint import load_task_weights, read_weights_only, save_atomic
from .device import broadcast_object, is_main_process, pick_device
from .errors import UserError

RUNS_ROOT_ENV = "DLS_RUNS"
ARGS_FILE = "args.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.pt"
MODEL_FORMAT = "dls-cv/model"
MODEL_VERSION = 1
RECORD_KEYS = ("homework", "command")  # written into args.json beside the options
HOMEWORK_NAME = re.compile(r"hw_[a-z0-9_]+")
_unstarted: set[Path] = set()  # run folders this process created and has not started yet


def runs_root() -> Path:
    """Where default run folders go: ``$DLS_RUNS``, else ``runs`` in the current folder."""
    return Path(os.environ.get(RUNS_ROOT_ENV, "runs"))


def remove_unstarted() -> None:
    """Delete the run folders this process created and never started, if still without files."""
    while _unstarted:
        path = _unstarted.pop()
        if path.is_dir() and not _holds_files(path):
            shutil.rmtree(path, ignore_errors=True)




# -- reading a run ------------------------------------------------------------------------------

def read_args(run: str | os.PathLike, homework: str | None = None) -> dict:
    """The settings a run was trained with (its ``args.json``).

    Raises:
        UserError: no such folder, no ``args.json``, not valid JSON, or (with ``homework``) a
            run of another homework.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: run folder not found")
    path = run / ARGS_FILE
    if not path.is_file():
        what = f"a {homework}.train run folder" if homework else "a run folder written by a homework's train command"
        raise UserError(f"{run}: no {ARGS_FILE} (is this {what}?)")
    try:
        args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(args, dict):
        raise UserError(f"{path}: expected a mapping of option names to values")
    if homework is not None and args.get("homework") not in (None, homework):
        raise UserError(f"{run}: a run of {args['homework']}, not of {homework}")
    return args


def run_homework(run: str | os.PathLike) -> str:
    """The homework package that wrote a run folder: the ``"homework"`` entry of its
    ``args.json`` (only names of the form ``hw_<letters, digits, _>`` are accepted).

    Raises:
        UserError: no such folder, no ``args.json``, or no homework named in it.
    """
    name = read_args(run).get("homework")
    if isinstance(name, str) and HOMEWORK_NAME.fullmatch(name):
        return name
    raise UserError(f"{Path(run) / ARGS_FILE}: does not say which homework wrote it (no 'homework' entry)")


def read_metrics(run: str | os.PathLike) -> dict:
    """The run's ``metrics.json`` (``{}`` when it has none)."""
    path = Path(run) / METRICS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


# -- the model file -----------------------------------------------------------------------------

@dataclass
class SavedModel:
    """What :func:`read_model` found in a model file (see the module docstring)."""

    path: Path
    homework: str
    kind: str
    config: dict
    state_dict: dict
    extras: dict = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A run's model, rebuilt and ready: what every ``hw_<name>.load_model(run)`` returns.

    ``model`` is in eval mode on the CPU (for churn, the fitted estimator); ``config`` and
    ``extras`` are the model file's; ``settings`` is the run's ``args.json``; ``metrics`` its
    ``metrics.json`` (``{}`` if absent).
    """

    run: Path
    homework: str
    kind: str
    model: Any
    config: dict
    extras: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.run.resolve().name


def save_model(run: str | os.PathLike, *, homework: str, kind: str, config: dict, state_dict: dict,
               extras: dict | None = None, name: str = MODEL_FILE) -> Path:
    """Write the model file ``run/name`` atomically (rank 0 only under DDP); returns its path.

    ``config`` and ``extras`` must be plain values (numbers, strings, lists, dicts, tensors):
    the file is read back weights-only. ``state_dict`` holds tensors (a container module's
    state dict when the model has several parts).
    """
    path = Path(run) / name
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "homework": homework, "kind": kind,
               "config": dict(config), "state_dict": {k: v.detach().cpu() if hasattr(v, "detach") else v
                                                      for k, v in state_dict.items()},
               "extras": dict(extras or {})}
    if is_main_process():
        save_atomic(payload, path)
    return path


def read_model(run: str | os.PathLike, homework: str | None = None, name: str = MODEL_FILE) -> SavedModel:
    """Read ``run/name`` written by :func:`save_model`, weights-only.

    Raises:
        UserError: no run folder; no model file (for a run written before model files existed,
            the message says to train it again); a file of another format, a newer version, or
            (with ``homework``) of another homework.
    """
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: run folder not found")
    path = run / name
    if not path.is_file():
        if (run / "best.pt").is_file() or (run / "last.pt").is_file():
            raise UserError(f"{run}: no {name}: the run was written by an older version of this project, "
                            f"whose model files this one does not read; train it again (its options are in "
                            f"{run / ARGS_FILE}: pass that file as --config)")
        raise UserError(f"{run}: no {name} (is this a finished training run? a run stopped before its end "
                        "can be continued with --resume RUN/last.pt)")
    payload = read_weights_only(path, what="model file")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise UserError(f"{path}: not a model file of this version of the project (written by an older one, or "
                        f"by something else); train the run again (its options are in {run / ARGS_FILE}: pass "
                        "that file as --config)")
    if payload.get("version", 0) > MODEL_VERSION:
        raise UserError(f"{path}: model file version {payload['version']}, this code reads up to "
                        f"{MODEL_VERSION}: update the project")
    if homework is not None and payload["homework"] != homework:
        raise UserError(f"{path}: a {payload['homework']} model, not a {homework} one")
    return SavedModel(path, payload["homework"], payload["kind"], payload["config"], payload["state_dict"],
                      payload.get("extras") or {})


def rebuild_model(run: str | os.PathLike, homework: str, build: Callable[[SavedModel], Any],
                  kind: str | None = None) -> LoadedModel:
    """What a homework's ``load_model(run)`` does: read the run's model file (:func:`read_model`),
    ``build(saved)`` the network its ``config`` describes, load every weight (names and shapes
    must match), and return it in eval mode on the CPU with the run's settings and metrics.

    Raises:
        UserError: what :func:`read_model` and :func:`read_args` raise; a file of another
            ``kind``; a config ``build`` cannot use (its ``KeyError``/``TypeError``/``ValueError``);
            weights that do not fit the network (named in one line).
    """
    settings = read_args(run, homework)
    saved = read_model(run, homework=homework)
    if kind is not None and saved.kind != kind:
        raise UserError(f"{saved.path}: a {saved.kind!r} model, not the {kind!r} model {homework} saves")
    try:
        model = build(saved)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{saved.path}: cannot rebuild the model from its config ({type(exc).__name__}: {exc})") from None
    load_task_weights(model, saved.state_dict, saved.path)
    return LoadedModel(Path(run), homework, saved.kind, model.eval(), saved.config, saved.extras, settings,
                       read_metrics(run))


def load_model(run: str | os.PathLike) -> LoadedModel:
    """The model of any run: ``hw_<name>.load_model(run)`` of the homework that wrote it.

    Raises:
        UserError: not a run folder, a homework without ``load_model``, or its errors.
    """
    homework = run_homework(run)
    try:
        module = importlib.import_module(homework)
    except ModuleNotFoundError as exc:
        if exc.name != homework:
            raise
        raise UserError(f"{run}: written by {homework}, which is not installed") from None
    loader = getattr(module, "load_model", None)
    if loader is None:
        raise UserError(f"{run}: {homework} has no load_model(run)")
    return loader(run)


# -- the run folder -----------------------------------------------------------------------------

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
        ``"homework"`` (which package wrote the run: see :func:`run_homework`) and the command."""
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
