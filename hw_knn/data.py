"""The forest cover-type table: the course's CSV, scikit-learn's covtype, or bundled data.

The course's ``forest_dataset.csv`` is a 10000-row sample of the UCI Covertype data: a header
of the integers ``0 .. 54``, 54 numeric features (40 of them 0/1) and the cover type 1..7 in
the last column. :func:`read_forest_csv` checks every column, so a bad file is reported with
its name, the column and the first bad row instead of failing deep inside scikit-learn.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import DataError, require_file

FOREST_FILE = "forest_dataset.csv"
BUILTIN = ("digits", "wine")


@dataclass
class Table:
    """Features, labels and a one-line description of where they came from."""

    X: np.ndarray  # (n, d) float64
    y: np.ndarray  # (n,) int64 class labels
    description: str


def read_forest_csv(path: str | os.PathLike) -> Table:
    """Read a CSV whose last column is the label and all other columns numeric features.

    Raises:
        DataError: the file is missing or unreadable, has fewer than 2 columns, a column with
            a non-numeric value or a missing feature value, or a label that is missing or
            not an integer. The message names the file, the column and the first bad row.
    """
    path = require_file(path, "forest CSV")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    if df.shape[1] < 2:
        raise DataError(f"{path}: {df.shape[1]} column(s) ({', '.join(map(repr, df.columns))}); "
                        "expected features followed by a label column")
    if df.empty:
        raise DataError(f"{path}: no data rows")
    label_column = df.columns[-1]
    columns = {name: _numeric_column(df, name, path) for name in df.columns}
    labels = columns.pop(label_column)
    if np.isnan(labels).any():
        row = int(np.flatnonzero(np.isnan(labels))[0])
        raise DataError(f"{path}: label column {label_column!r} is empty in {int(np.isnan(labels).sum())} "
                        f"row(s), first at data row {row + 1}")
    if not np.all(labels == np.round(labels)):
        row = int(np.flatnonzero(labels != np.round(labels))[0])
        raise DataError(f"{path}: label column {label_column!r} has a non-integer value "
                        f"{labels[row]:g} at data row {row + 1}")
    for name, values in columns.items():
        if np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values))[0])
            raise DataError(f"{path}: column {name!r} has {int(np.isnan(values).sum())} empty value(s), "
                            f"first at data row {row + 1}")
    X = np.column_stack(list(columns.values()))
    return Table(X, labels.astype(np.int64), f"{path} ({len(X)} rows, {X.shape[1]} features)")


def _numeric_column(df: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    """One text column as float64 (blank cells become NaN); a non-number raises DataError."""
    text = df[name].str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = (values.isna() & (text != "")) | np.isinf(values)  # 'inf', '1e400' overflow to infinity
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: column {name!r} is not a finite number: {text.iloc[row]!r} at data row {row + 1}")
    return values.to_numpy(dtype=np.float64)


def load_covtype(n_rows: int = 10000, seed: int = 42, data_home: str | None = None) -> Table:
    """A seeded ``n_rows`` sample of scikit-learn's ``fetch_covtype`` (581012 rows, downloaded
    once into scikit-learn's data home).

    Raises:
        DataError: the data is not cached and cannot be downloaded (no network).
    """
    from sklearn.datasets import fetch_covtype

    try:
        bunch = fetch_covtype(data_home=data_home, download_if_missing=True)
    except (OSError, ValueError) as exc:  # URLError is an OSError; offline lands here
        raise DataError(f"covtype: cannot download scikit-learn's fetch_covtype data "
                        f"(no network?): {type(exc).__name__}: {exc}") from None
    rows = np.random.default_rng(seed).choice(len(bunch.target), size=n_rows, replace=False)
    return Table(bunch.data[rows].astype(np.float64), bunch.target[rows].astype(np.int64),
                 f"scikit-learn covtype, {n_rows} rows sampled with seed {seed}")


def load_builtin(name: str = "digits") -> Table:
    """A data set bundled with scikit-learn (no network): ``digits`` (1797 8x8 images, 64
    integer features, classes 0..9) or ``wine`` (178 rows, 13 features, classes 0..2)."""
    from sklearn.datasets import load_digits, load_wine

    loaders = {"digits": load_digits, "wine": load_wine}
    if name not in loaders:
        raise ValueError(f"unknown built-in data set {name!r}; choose from {BUILTIN}")
    X, y = loaders[name](return_X_y=True)
    return Table(X.astype(np.float64), y.astype(np.int64),
                 f"scikit-learn's bundled {name} ({len(X)} rows, {X.shape[1]} features)")


def class_frequencies(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Share of each of ``classes`` among the labels ``y``."""
    return np.array([(y == c).mean() for c in classes])
