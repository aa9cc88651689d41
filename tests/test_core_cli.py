"""core.cli: option checks (command line and --config), the one error path, run folders that
are never reused, and args.json written only when a run starts."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from core import cli, runs
from core.errors import UserError
from core.trainer import Task, Trainer


def make_parser():
    parser = cli.make_parser("hw_demo.train", "demo")
    cli.add_data_args(parser, "demo")
    cli.add_training_args(parser, epochs=5, batch_size=8, lr=0.01)
    parser.add_argument("--loss", default="dice", choices=["dice", "bce"])
    parser.add_argument("--keep", type=cli.probability, default=0.5)
    parser.add_argument("--n-jobs", type=cli.n_jobs, default=-1)
    return parser


def demo_main(argv):
    """A command: parse, then a UserError or the run folder."""
    args = cli.parse_args(make_parser(), argv)
    return runs.RunDir.create("hw_demo", args)


# -- option checks ----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["--epochs", "2.5"], "argument --epochs: expected an integer >= 1, got '2.5'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--accumulate", "0"], "argument --accumulate: expected an integer >= 1, got '0'"),
    (["--grad-clip", "-1"], "argument --grad-clip: expected a number > 0, got '-1'"),
    (["--grad-clip", "0"], "argument --grad-clip: expected a number > 0, got '0'"),
    (["--lr", "-1"], "argument --lr: expected a number > 0, got '-1'"),
    (["--lr", "nan"], "argument --lr: expected a number > 0, got 'nan'"),
    (["--lr", "1e400"], "argument --lr: expected a number > 0, got '1e400'"),
    (["--num-workers", "-1"], "argument --num-workers: expected an integer >= 0, got '-1'"),
    (["--patience", "0"], "argument --patience: expected an integer >= 1, got '0'"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1, got '0'"),
    (["--limit-batches", "0"], "argument --limit-batches: expected an integer >= 1, got '0'"),
    (["--device", "gpu7"], "argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu7'"),
    (["--device", "meta"], "argument --device: expected auto, cpu, cuda, cuda:N or mps, got 'meta'"),
    (["--keep", "1.5"], "argument --keep: expected a number in [0, 1], got '1.5'"),
    (["--n-jobs", "0"], "argument --n-jobs: expected -1 (every core) or a number of processes >= 1, got '0'"),
    (["--precision", "8"], "argument --precision: invalid choice: '8'"),
    (["--resume", "nowhere/last.pt"], "argument --resume: nowhere/last.pt: file not found"),
    (["--run-name", "a/b"], "argument --run-name: expected a folder name without '/'"),
])
def test_bad_option_is_one_line_before_any_work(argv, message, cli_error, runs_root):
    line = cli_error(demo_main, argv)
    assert line.startswith("python -m hw_demo.train: error: ") and message in line
    assert not runs_root.exists()  # nothing created


def test_unavailable_device_is_refused_while_parsing(monkeypatch, cli_error, runs_root):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = cli_error(demo_main, ["--device", "cuda"])
    assert line.endswith("argument --device: CUDA is not available on this machine")


def test_good_values_are_converted():
    args = cli.parse_args(make_parser(), ["--lr", "3e-4", "--grad-clip", "1", "--keep", "0", "--n-jobs", "2",
                                          "--device", "cpu", "--num-workers", "0"])
    assert (args.lr, args.grad_clip, args.keep, args.n_jobs, args.device) == (3e-4, 1.0, 0.0, 2, "cpu")


@pytest.mark.parametrize("config,message", [
    ({"epochs": 0}, "epochs (argument --epochs): expected an integer >= 1, got '0'"),
    ({"loss": "focal"}, "loss (argument --loss): invalid choice: 'focal' (choose from 'dice', 'bce')"),
    ({"precision": 8}, "precision (argument --precision): invalid choice: '8'"),
    ({"grad_clip": -1.0}, "grad_clip (argument --grad-clip): expected a number > 0, got '-1.0'"),
    ({"lr": float("inf")}, "lr (argument --lr): expected a number > 0, got 'Infinity'"),
    ({"device": "gpu7"}, "device (argument --device): expected auto, cpu, cuda, cuda:N or mps"),
    ({"dry_run": "yes"}, "dry_run (argument --dry-run): expected true or false, got 'yes'"),
    ({"epochs": [1, 2]}, "epochs (argument --epochs): expected one value, got a list [1, 2]"),
    ({"epocs": 3}, "unknown option(s) epocs"),
])
def test_config_values_get_the_same_checks(tmp_path, config, message, cli_error):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    line = cli_error(demo_main, ["--config", str(path)])
    assert line.startswith(f"python -m hw_demo.train: error: --config {path}: ") and message in line


def test_config_values_are_converted_like_typed_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: '1e-3'\nprecision: 32\nbatch-size: 4\ndeterministic: true\ngrad_clip: null\n")
    args = cli.parse_args(make_parser(), ["--config", str(path), "--batch-size", "6"])
    assert (args.lr, args.precision, args.batch_size, args.deterministic, args.grad_clip) == (1e-3, "32", 6, True, None)


def test_a_runs_args_json_is_a_config_for_the_next_run(runs_root):
    first = demo_main(["--run-name", "first", "--lr", "0.5", "--loss", "bce"])
    args = cli.parse_args(make_parser(), ["--config", str(first / "args.json"), "--run-name", "second"])
    assert (args.lr, args.loss, args.run_name) == (0.5, "bce", "second")
    assert runs.RunDir.create("hw_demo", args).path == runs_root / "hw_demo" / "second"


def test_missing_or_broken_config_is_one_line(tmp_path, cli_error):
    assert cli_error(demo_main, ["--config", str(tmp_path / "no.yaml")]).endswith("no.yaml: file not found")
    broken = tmp_path / "b.json"
    broken.write_text("{epochs: ")
    assert "b.json: cannot parse" in cli_error(demo_main, ["--config", str(broken)])


def test_check_folds_names_the_smallest_class():
    cli.check_folds(3, [0, 0, 0, 1, 1, 1])
    with pytest.raises(UserError, match=r"--cv 4: class 1 has only 3 row\(s\), fewer than the folds; use --cv 3 or less"):
        cli.check_folds(4, [0, 0, 0, 0, 1, 1, 1], "--cv")
    with pytest.raises(UserError, match="single class"):
        cli.check_folds(2, [1, 1, 1])


# -- the error path ---------------------------------------------------------------------------

def test_run_command_exit_codes(capsys):
    def fails(argv):
        raise UserError("data.csv: column 'x' row 3 is 'abc', expected a number")

    def interrupted(argv):
        raise KeyboardInterrupt

    def works(argv):
        return {"ok": 1}

    for main, code, err in ((fails, 2, "error: data.csv: column 'x' row 3 is 'abc', expected a number\n"),
                            (interrupted, 130, "interrupted\n"), (works, 0, "")):
        with pytest.raises(SystemExit) as info:
            cli.run_command(main, [])
        assert info.value.code == code and capsys.readouterr().err == err


# -- run folders ------------------------------------------------------------------------------

def test_runs_started_in_the_same_second_get_two_folders(runs_root, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-120000")
    first = demo_main([])
    second = demo_main([])
    assert first.path == runs_root / "hw_demo" / "20260101-120000"
    assert second.path == runs_root / "hw_demo" / "20260101-120000-2"
    assert (first / "args.json").is_file() and (second / "args.json").is_file()


def test_concurrent_runs_never_share_a_folder(runs_root, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-120000")
    args = cli.parse_args(make_parser(), [])
    paths, barrier = [], threading.Barrier(8)

    def claim():
        barrier.wait()
        paths.append(runs.RunDir.reserve("hw_demo", args).path)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8


def test_named_folder_holding_a_run_is_refused(runs_root, cli_error):
    first = demo_main(["--run-name", "exp"])
    (first / "last.pt").write_bytes(b"x")
    line = cli_error(demo_main, ["--run-name", "exp", "--epochs", "3"])
    assert line == (f"error: --run-name exp ({runs_root / 'hw_demo' / 'exp'}): the folder already holds a run; "
                    "choose another --run-name/--run-dir, --resume its last.pt to continue it, "
                    "or add --overwrite to replace it")
    assert json.loads((first / "args.json").read_text())["epochs"] == 5  # untouched


def test_overwrite_empties_the_run_first(tmp_path):
    run_dir = tmp_path / "run"
    demo_main(["--run-dir", str(run_dir)])
    (run_dir / "eval-ph2").mkdir()
    (run_dir / "eval-ph2" / "metrics.json").write_text("{}")
    (run_dir / "submission.csv").write_text("Id,Churn\n")
    run = demo_main(["--run-dir", str(run_dir), "--overwrite", "--epochs", "2"])
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*"))
    assert files == ["args.json", "plots"]
    assert json.loads((run / "args.json").read_text())["epochs"] == 2


def test_resume_into_its_own_folder_is_allowed(tmp_path):
    run_dir = tmp_path / "run"
    demo_main(["--run-dir", str(run_dir)])
    (run_dir / "last.pt").write_bytes(b"x")
    run = runs.RunDir.reserve("hw_demo", cli.parse_args(make_parser(), ["--run-dir", str(run_dir), "--resume",
                                                                      str(run_dir / "last.pt")]))
    assert run.path == run_dir and (run_dir / "last.pt").is_file()
    with pytest.raises(UserError, match="--overwrite would delete the run that --resume continues"):
        runs.RunDir.reserve("hw_demo", cli.parse_args(make_parser(), [
            "--run-dir", str(run_dir), "--resume", str(run_dir / "last.pt"), "--overwrite"]))
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")  # a checkpoint elsewhere does not open this folder
    with pytest.raises(UserError, match="already holds a run"):
        runs.RunDir.reserve("hw_demo", cli.parse_args(make_parser(), ["--run-dir", str(run_dir), "--resume", str(other)]))


def test_a_folder_that_is_not_a_run_is_never_emptied(tmp_path, cli_error):
    (tmp_path / "notes.txt").write_text("mine")
    line = cli_error(demo_main, ["--run-dir", str(tmp_path), "--overwrite"])
    assert "holds no args.json, so it is not a run folder" in line
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert "the folder already is not empty" in cli_error(demo_main, ["--run-dir", str(tmp_path)])
    empty = tmp_path / "empty"
    (empty / "plots").mkdir(parents=True)  # an unstarted run's folder counts as empty
    assert demo_main(["--run-dir", str(empty)]).path == empty


def test_a_run_that_fails_before_it_starts_leaves_no_folder(tmp_path, runs_root, cli_error):
    def fails_after_reserving(argv):
        args = cli.parse_args(make_parser(), argv)
        runs.RunDir.reserve("hw_demo", args)
        raise UserError("bad.pt: a checkpoint of another model")

    assert cli_error(fails_after_reserving, []) == "error: bad.pt: a checkpoint of another model"
    assert cli_error(fails_after_reserving, ["--run-name", "named"]).endswith("another model")
    assert list((runs_root / "hw_demo").iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()  # a folder that existed before is the user's: kept
    cli_error(fails_after_reserving, ["--run-dir", str(mine)])
    assert mine.is_dir()


def test_unwritable_output_folder_is_one_line(tmp_path, cli_error):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = cli_error(demo_main, ["--run-dir", str(blocker / "run")])
    assert line.startswith(f"error: --run-dir {blocker / 'run'}: cannot create the run folder")
    assert cli_error(demo_main, ["--run-dir", str(blocker)]).endswith("exists and is not a folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_output_folder_is_one_line(tmp_path, cli_error):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = cli_error(demo_main, ["--run-dir", str(locked / "run")])
    finally:
        locked.chmod(0o755)
    assert "cannot create the run folder (Permission denied)" in line


def test_read_only_output_folder_as_root_too(tmp_path, cli_error, monkeypatch):
    """Root ignores permissions, so the refusal is simulated at the mkdir."""
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = cli_error(demo_main, ["--run-dir", str(tmp_path / "run")])
    assert line == f"error: --run-dir {tmp_path / 'run'}: cannot create the run folder (Permission denied)"


# -- args.json only when the run starts -------------------------------------------------------

class Line(Task):
    def __init__(self, out: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Linear(2, out)

    def training_step(self, batch):
        x, y = batch
        return F.mse_loss(self.model(x)[:, 0], y)

    def validation_step(self, batch):
        x, y = batch
        return {"loss": F.mse_loss(self.model(x)[:, 0], y)}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(argv, task):
    args = cli.parse_args(make_parser(), argv)
    run = runs.RunDir.reserve("hw_demo", args)
    assert args.resume or not (run / "args.json").exists()  # reserved, not started
    data = TensorDataset(torch.randn(8, 2), torch.randn(8))
    trainer = cli.build_trainer(args, run_dir=run.path, monitor="val_loss", mode="min", progress=False,
                                callbacks=[run.start_callback(args)])
    trainer.fit(task, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4), resume=args.resume)
    return run


def test_args_json_is_written_when_fit_starts_and_not_by_a_failed_resume(tmp_path):
    run_dir = tmp_path / "run"
    run = fit(["--run-dir", str(run_dir), "--epochs", "1"], Line())
    assert json.loads((run / "args.json").read_text())["epochs"] == 1
    before = (run / "args.json").read_text()
    # a checkpoint of another model, resumed into the same folder: fails before the run starts
    with pytest.raises(UserError, match=r"last\.pt: checkpoint of another model \(Line does not fit it\): "
                                          r"shape differs for model\.weight, model\.bias \(2\)"):
        fit(["--run-dir", str(run_dir), "--epochs", "3", "--resume", str(run_dir / "last.pt")], Line(out=3))
    assert (run / "args.json").read_text() == before
    # the same model resumes, and args.json now says 3 epochs
    fit(["--run-dir", str(run_dir), "--epochs", "3", "--resume", str(run_dir / "last.pt")], Line())
    assert json.loads((run / "args.json").read_text())["epochs"] == 3


@pytest.mark.slow
def test_under_torchrun_every_rank_gets_rank_0s_refusal(tmp_path):
    taken, reports = tmp_path / "taken", tmp_path / "reports"
    taken.mkdir()
    reports.mkdir()
    (taken / "args.json").write_text("{}")
    here = Path(__file__).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(here.parent), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(here / "ddp_train_script.py"), "--taken-folder", str(reports), str(taken)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outcomes = {p.stem: p.read_text().strip() for p in reports.iterdir()}
    assert sorted(outcomes) == ["rank0", "rank1"] and outcomes["rank0"] == outcomes["rank1"]
    assert outcomes["rank0"].startswith(f"--run-dir {taken}: the folder already holds a run")
    assert sorted(p.name for p in taken.iterdir()) == ["args.json"]


def test_apply_recipe_fills_only_the_options_left_unset():
    args = argparse.Namespace(epochs=None, lr=0.5, batch_size=None, stages=None)
    used = cli.apply_recipe(args, {"epochs": 30, "lr": 2e-3, "batch_size": 16, "stages": "all:3"},
                            skip=("stages",))
    assert (args.epochs, args.lr, args.batch_size, args.stages) == (30, 0.5, 16, None)
    assert used == {"epochs": 30, "lr": 0.5, "batch_size": 16, "stages": None}
    assert cli.recipe_epilog({"a": {"epochs": 3}, "b": {"lr": 0.1}}).endswith("a: epochs=3; b: lr=0.1")
