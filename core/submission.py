"""Write Kaggle submission CSVs, validated before anything touches the disk.

A submission that Kaggle rejects (or, worse, scores silently wrong) costs a day's quota, so
:func:`write_submission` checks everything it can first: exact columns in order, the row
count, every expected id present once and no other id, and no missing values.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


class SubmissionError(ValueError):
    """The submission table is not valid; the message says what is wrong and where."""


def validate_submission(
    df: pd.DataFrame,
    columns: Sequence[str],
    id_column: str | None = None,
    expected_ids: Sequence | None = None,
    n_rows: int | None = None,
    allowed_values: Sequence | None = None,
    value_range: tuple[float, float] | None = None,
    name: str = "submission",
) -> None:
    """Raise :class:`SubmissionError` unless ``df`` is a valid submission.

    Args:
        df: the table to check.
        columns: the exact column names, in order (e.g. ``["Id", "Churn"]``).
        id_column: the id column; ids must be unique.
        expected_ids: the ids the competition expects (e.g. the test file names); each must
            appear exactly once, and no other id may appear.
        n_rows: the expected number of rows (defaults to ``len(expected_ids)``).
        allowed_values: for label submissions, the values the prediction columns may take.
        value_range: for probability submissions, the closed interval values must lie in.
        name: how to call the table in messages (usually the file name).
    """
    columns = list(columns)
    got = list(df.columns)
    if got != columns:
        missing = [c for c in columns if c not in got]
        extra = [c for c in got if c not in columns]
        detail = []
        if missing:
            detail.append(f"missing {missing}")
        if extra:
            detail.append(f"unexpected {extra}")
        if not detail:
            detail.append(f"order is {got}")
        raise SubmissionError(f"{name}: columns must be {columns}; {', '.join(detail)}")

    if n_rows is None and expected_ids is not None:
        n_rows = len(expected_ids)
    if n_rows is not None and len(df) != n_rows:
        raise SubmissionError(f"{name}: has {len(df)} rows, expected {n_rows}")

    nan_mask = df.isna()
    if nan_mask.to_numpy().any():
        row, col = np.argwhere(nan_mask.to_numpy())[0]
        count = int(nan_mask.to_numpy().sum())
        raise SubmissionError(
            f"{name}: {count} missing value(s) (NaN); first in column '{df.columns[col]}' at row {row}")

    if id_column is not None:
        if id_column not in df.columns:
            raise SubmissionError(f"{name}: id column '{id_column}' not among {got}")
        ids = df[id_column]
        duplicated = ids[ids.duplicated()]
        if len(duplicated):
            raise SubmissionError(f"{name}: id {_show(duplicated.iloc[0])} appears more than once "
                                  f"({len(duplicated)} duplicate id(s))")
        if expected_ids is not None:
            expected = pd.Index(expected_ids)
            present = pd.Index(ids)
            missing_ids = expected.difference(present)
            unknown_ids = present.difference(expected)
            if len(missing_ids):
                raise SubmissionError(f"{name}: {len(missing_ids)} expected id(s) missing, "
                                      f"e.g. {_show(missing_ids[0])}")
            if len(unknown_ids):
                raise SubmissionError(f"{name}: {len(unknown_ids)} unknown id(s), e.g. {_show(unknown_ids[0])}")

    value_columns = [c for c in columns if c != id_column]
    for col in value_columns:
        values = df[col]
        if allowed_values is not None:
            bad = values[~values.isin(list(allowed_values))]
            if len(bad):
                raise SubmissionError(f"{name}: column '{col}' row {bad.index[0]} has {_show(bad.iloc[0])}, "
                                      f"not one of the {len(allowed_values)} allowed values")
        if value_range is not None:
            numeric = pd.to_numeric(values, errors="coerce")
            low, high = value_range
            bad = values[numeric.isna() | (numeric < low) | (numeric > high)]
            if len(bad):
                raise SubmissionError(f"{name}: column '{col}' row {bad.index[0]} has {_show(bad.iloc[0])}, "
                                      f"outside [{low}, {high}]")


def _show(value) -> str:
    """``repr`` of a cell, with NumPy scalars shown as plain Python values."""
    return repr(value.item() if hasattr(value, "item") else value)


def write_submission(df: pd.DataFrame, path: str | os.PathLike, **checks) -> Path:
    """Validate ``df`` with :func:`validate_submission` (same keyword arguments), then write it
    as CSV without the index. Nothing is written if a check fails."""
    path = Path(path)
    validate_submission(df, name=path.name, **checks)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path
