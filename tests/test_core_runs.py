"""core.runs: a run's settings and its one model file; core.checkpoint's atomic, weights-only files."""
from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

from core import runs
from core.checkpoint import read_weights_only, save_atomic
from core.errors import UserError


def make_run(tmp_path, homework="hw_demo"):
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"homework": homework, "epochs": 3}))
    return run


def test_a_model_file_reads_back_exactly(tmp_path):
    run = make_run(tmp_path)
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    path = runs.save_model(run, homework="hw_demo", kind="regression", config={"inputs": 3, "outputs": 2},
                           state_dict=model.state_dict(), extras={"classes": ["a", "b"], "mean": [0.5]})
    assert path == run / "model.pt" and not list(run.glob("*.tmp"))
    saved = runs.read_model(run, homework="hw_demo")
    assert (saved.homework, saved.kind, saved.config, saved.extras) == (
        "hw_demo", "regression", {"inputs": 3, "outputs": 2}, {"classes": ["a", "b"], "mean": [0.5]})
    rebuilt = nn.Linear(**{"in_features": saved.config["inputs"], "out_features": saved.config["outputs"]})
    rebuilt.load_state_dict(saved.state_dict)
    x = torch.randn(4, 3)
    assert torch.equal(rebuilt(x), model(x))


def test_model_file_refusals_name_the_file_and_what_to_do(tmp_path):
    run = make_run(tmp_path)
    with pytest.raises(UserError, match=r"no model\.pt \(is this a finished training run"):
        runs.read_model(run)
    torch.save({"task": {}}, run / "last.pt")
    with pytest.raises(UserError, match=r"written by an older version of this project.*train it again"):
        runs.read_model(run)
    torch.save({"model": {"w": torch.zeros(1)}}, run / "model.pt")  # an older layout: no "format"
    with pytest.raises(UserError, match=r"model\.pt: not a model file of this version.*train the run again"):
        runs.read_model(run)
    runs.save_model(run, homework="hw_other", kind="x", config={}, state_dict={})
    with pytest.raises(UserError, match=r"model\.pt: a hw_other model, not a hw_demo one"):
        runs.read_model(run, homework="hw_demo")
    payload = torch.load(run / "model.pt", weights_only=True)
    torch.save({**payload, "version": runs.MODEL_VERSION + 1}, run / "model.pt")
    with pytest.raises(UserError, match=r"model file version 2, this code reads up to 1"):
        runs.read_model(run)
    with pytest.raises(UserError, match=r"missing: run folder not found"):
        runs.read_model(tmp_path / "missing")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


def test_a_file_that_would_run_code_is_refused(tmp_path):
    torch.save({"format": runs.MODEL_FORMAT, "evil": Evil()}, tmp_path / "model.pt")
    (tmp_path / "args.json").write_text("{}")
    with pytest.raises(UserError, match=r"model\.pt: refused: the file holds Python objects that could run code"):
        runs.read_model(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"junk\.pt: cannot read weights"):
        read_weights_only(tmp_path / "junk.pt", what="weights")


def test_save_atomic_leaves_the_old_file_when_writing_fails(tmp_path):
    path = save_atomic({"a": torch.ones(2)}, tmp_path / "sub" / "file.pt")
    with pytest.raises(Exception):
        save_atomic({"bad": lambda: 0}, path)  # a lambda cannot be pickled: the write fails
    assert torch.equal(read_weights_only(path)["a"], torch.ones(2))


def test_run_settings_and_homework(tmp_path):
    run = make_run(tmp_path, homework="hw_segment")
    assert runs.read_args(run, homework="hw_segment")["epochs"] == 3
    assert runs.run_homework(run) == "hw_segment"
    with pytest.raises(UserError, match=r"a run of hw_segment, not of hw_gan"):
        runs.read_args(run, homework="hw_gan")
    (run / "args.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"args\.json: expected a mapping"):
        runs.read_args(run)
    assert runs.read_metrics(run) == {}
    (run / "metrics.json").write_text('{"iou": 0.5}')
    assert runs.read_metrics(run) == {"iou": 0.5}


def test_load_model_dispatches_to_the_homework(tmp_path):
    run = make_run(tmp_path, homework="hw_knn")
    with pytest.raises(UserError, match=r"hw_knn has no load_model\(run\)"):
        runs.load_model(run)
    (run / "args.json").write_text(json.dumps({"homework": "hw_nowhere"}))
    with pytest.raises(UserError, match=r"written by hw_nowhere, which is not installed"):
        runs.load_model(run)
    (run / "args.json").write_text(json.dumps({"homework": "hw_segment"}))
    with pytest.raises(UserError, match=r"no model\.pt"):
        runs.load_model(run)
