"""Every command's ``--help`` agrees with what the command does."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = sorted(f"{path.parent.name}.{path.stem}" for path in ROOT.glob("hw_*/*.py")
                  if "def main(" in path.read_text() and 'if __name__ == "__main__"' in path.read_text())
IMAGE_PREDICTORS = ("hw_segment.predict", "hw_classify.predict", "hw_detection.predict", "hw_plates.predict")


def help_text(command: str, capsys) -> str:
    """The command's ``--help``, with runs of white space made one space (argparse wraps lines)."""
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(command).main(["--help"])
    assert exit_info.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def option_help(text: str, flag: str) -> str:
    """The help of ``flag`` in the options list (the flag and its metavar, to the next option)."""
    found = re.search(rf" {re.escape(flag)} [A-Z][A-Z_]* ((?:(?! --[a-z]).)*)", text) or \
        re.search(rf" {re.escape(flag)} ((?:(?! --[a-z]).)*)", text)
    assert found, f"{flag} not in the help"
    return found.group(1)


def test_the_commands_are_found():
    assert {"hw_segment.train", "hw_gan.sample", "hw_churn.submit", "hw_plates.evaluate"} <= set(COMMANDS)
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_unfilled_placeholder(command, capsys):
    text = help_text(command, capsys)
    assert "<dataset>" not in text
    if "--time-limit" in text:
        assert "of its start" in option_help(text, "--time-limit")


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.endswith((".evaluate", ".predict"))])
def test_evaluate_and_predict_say_they_write_inside_the_run(command, capsys):
    text = help_text(command, capsys)
    run_dir = option_help(text, "--run-dir")
    assert "<run>/" in run_dir and "runs/<homework>" not in run_dir


@pytest.mark.parametrize("command", IMAGE_PREDICTORS)
def test_image_predictors_list_no_generator_options(command, capsys):
    text = help_text(command, capsys)
    assert " --seed" not in text and " --count" not in text


def test_the_generator_predictor_lists_seed_and_count(capsys):
    text = help_text("hw_gan.predict", capsys)
    assert " --seed" in text and " --count" in text


def test_detection_help_says_real_data_training_stops_after_17_minutes(capsys):
    assert "17 minutes" in help_text("hw_detection.train", capsys)


def test_an_abbreviated_option_is_refused(capsys):
    from hw_segment import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["--los", "dice", "--dry-run"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --los dice" in capsys.readouterr().err
