"""Write the Kaggle submission of a trained churn run: ``Id,Churn`` with one probability per test row.

    python -m hw_churn.submit --run runs/hw_churn/<name>            # RUN/submission.csv
    python -m hw_churn.submit --run RUN --data-dir PATH --out sub.csv

``test.csv`` is read from ``--data-dir``, else ``$DLS_DATA/churn``, else the built-in sample
(the Kaggle files: ``kaggle competitions download -c advanced-dls-spring-2021``). ``Id`` is the
row index of test.csv (0..n-1), as the competition's sample submission numbers it. The table
is validated (columns, row count, ids, NaNs, probabilities in [0, 1]) before it is written.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

from core import cli
from core.data import DataError, resolve_data_root
from core.errors import UserError
from core.runs import LoadedModel
from core.submission import SubmissionError, write_submission

from .data import clean_table, make_sample, read_table
from .models import MODEL_FILE, load_model
from .train import BUILTIN


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_churn.submit", __doc__.split("\n")[0])
    parser.epilog = ("test.csv comes from 'kaggle competitions download -c advanced-dls-spring-2021'; "
                     "upload the result with 'kaggle competitions submit -c advanced-dls-spring-2021 "
                     "-f submission.csv -m MESSAGE'")
    parser.add_argument("--run", required=True,
                        help="run folder written by hw_churn.train (its model.json, and catboost.cbm when the "
                             "model has CatBoost)")
    cli.add_data_args(parser, "churn", loader=False)
    parser.add_argument("--out", default=None, help="where to write the CSV (default RUN/submission.csv)")
    return parser


def load_test(root: Path | None) -> pd.DataFrame:
    """The cleaned test table: ``root/test.csv``, or the built-in sample's test rows."""
    if root is None:
        return clean_table(make_sample()[1], "built-in test")[0]
    path = root / "test.csv"
    return clean_table(read_table(path, with_target=False), str(path))[0]


def churn_probabilities(loaded: LoadedModel, test: pd.DataFrame) -> np.ndarray:
    """The loaded model's churn probabilities for ``test``: one finite number per row.

    Raises:
        DataError: naming the run's model file, when the model cannot score these rows.
    """
    from catboost import CatBoostError

    path = loaded.run / MODEL_FILE
    try:
        probabilities = np.asarray(loaded.model.predict(test), dtype=float)
    except (CatBoostError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: the saved model cannot score these rows ({str(exc).splitlines()[0]})") from None
    if probabilities.shape != (len(test),) or not np.isfinite(probabilities).all():
        raise DataError(f"{path}: the saved model gave {probabilities.shape} or non-finite predictions "
                        f"for {len(test)} rows")
    return probabilities


def make_submission(loaded: LoadedModel, test: pd.DataFrame) -> pd.DataFrame:
    """``Id`` = row index of test.csv, ``Churn`` = the model's churn probability."""
    return pd.DataFrame({"Id": np.arange(len(test)), "Churn": churn_probabilities(loaded, test)})


def main(argv: list[str] | None = None) -> Path:
    args = cli.parse_args(build_parser(), argv)
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "submission.csv"
    if args.out and not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    if out.parent.is_dir() and not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: folder {out.parent} is not writable")
    loaded = load_model(run)
    source = resolve_data_root("churn", args.data_dir, builtin=BUILTIN)
    test = load_test(source.root)
    about = loaded.extras
    print(f"model: {about['name']} ({about['description']}), CV ROC-AUC {about['cv_auc']:.4f}, "
          f"trained on {about['data'].removeprefix('data: ')}")
    submission = make_submission(loaded, test)
    try:
        write_submission(submission, out, columns=["Id", "Churn"], id_column="Id",
                         expected_ids=range(len(test)), value_range=(0.0, 1.0))
    except SubmissionError as exc:
        raise UserError(str(exc)) from None
    print(f"submission: {out} ({len(submission)} rows, mean churn probability {submission['Churn'].mean():.3f})")
    return out


if __name__ == "__main__":
    cli.run_command(main)
