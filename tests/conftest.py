"""Shared test fixtures.

Tests that need the real data subsets are marked ``realdata`` and take the ``dls_data``
fixture; without ``$DLS_DATA`` they are skipped with the reason. With
``DLS_REQUIRE_REALDATA=1`` (set by ``.ci/run``) the session fails if no ``realdata`` test
passed, so a CI run cannot go green while silently skipping every real-data check.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

_realdata_passed = 0


def _dls_data() -> Path | None:
    env = os.environ.get("DLS_DATA")
    return Path(env) if env else None


@pytest.fixture(scope="session")
def dls_data() -> Path:
    """The root of the real data subsets (``$DLS_DATA``); skips the test when unset."""
    root = _dls_data()
    if root is None:
        pytest.skip("DLS_DATA is not set (point it at the real data subsets)")
    if not root.is_dir():
        pytest.fail(f"DLS_DATA={root}: folder does not exist")
    return root


def real_dataset(dls_data: Path, name: str) -> Path:
    """``$DLS_DATA/<name>``, failing (not skipping) when DLS_DATA is set but the subset is missing."""
    path = dls_data / name
    if not path.is_dir():
        pytest.fail(f"DLS_DATA={dls_data} has no '{name}' folder")
    return path


@pytest.fixture
def one_thread():
    """Run the test with one intra-op thread (tiny models on a busy CPU: a second thread costs
    more than it gives). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def runs_root(tmp_path, monkeypatch) -> Path:
    """Send every run folder of the test to a temporary directory."""
    monkeypatch.setenv("DLS_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def pytest_runtest_logreport(report):
    global _realdata_passed
    if report.when == "call" and report.passed and "realdata" in report.keywords:
        _realdata_passed += 1


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("DLS_REQUIRE_REALDATA") == "1" and exitstatus == 0 and _realdata_passed == 0:
        print("\nDLS_REQUIRE_REALDATA=1 but no test marked 'realdata' passed: failing the run")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def segment_run(tmp_path_factory) -> Path:
    """A small ``hw_segment.train`` run folder (8 epochs on 120 built-in 32 px images, about
    10 s; its masks cover part of an image, about val IoU 0.55), shared by the predictor and
    web-service tests."""
    import torch

    from hw_segment import train

    run_dir = tmp_path_factory.mktemp("segment") / "lesions"
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DLS_DATA", raising=False)  # the built-in images, also where CI sets DLS_DATA
        train.main(["--size", "32", "--width", "8", "--n-images", "120", "--epochs", "8", "--run-dir", str(run_dir)])
    return run_dir


@pytest.fixture
def cli_error(capsys):
    """``cli_error(main, argv)`` runs a command as ``python -m`` does (under
    ``core.cli.run_command``) and returns its error line; it fails unless the command exits
    with status 2 after printing exactly one line on stderr."""
    from core.cli import run_command

    def run(main, argv: list[str]) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            run_command(main, argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2, (info.value.code, err)
        assert len(err) == 1, err
        return err[0]

    return run
