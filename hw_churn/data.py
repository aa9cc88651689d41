"""The churn tables: reading and checking train.csv/test.csv, cleaning, features, a built-in sample.

The Kaggle files (``kaggle competitions download -c advanced-dls-spring-2021``) have 3 numeric
columns, 16 categorical ones and, in ``train.csv`` only, the 0/1 target ``Churn``. Two quirks:
``TotalSpent`` is text with a blank string for clients whose ``ClientPeriod`` is 0 (they have
not paid yet, so the blank means 0), and ``IsSeniorCitizen`` is written 0/1 but is a category.
Everything is read as text and converted column by column, so a bad cell is reported with its
file, column and row instead of turning the whole column into ``object``.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import DataError, require_file

NUM_COLS = ["ClientPeriod", "MonthlySpending", "TotalSpent"]
CAT_COLS = [
    "Sex", "IsSeniorCitizen", "HasPartner", "HasChild", "HasPhoneService", "HasMultiplePhoneNumbers",
    "HasInternetService", "HasOnlineSecurityService", "HasOnlineBackup", "HasDeviceProtection",
    "HasTechSupportAccess", "HasOnlineTV", "HasMovieSubscription", "HasContractPhone",
    "IsBillingPaperless", "PaymentMethod",
]
FEATURE_COLS = NUM_COLS + CAT_COLS
TARGET_COL = "Churn"
# the six add-on services that need an internet connection ("Yes" / "No" / "No internet service")
INTERNET_SERVICES = ["HasOnlineSecurityService", "HasOnlineBackup", "HasDeviceProtection",
                     "HasTechSupportAccess", "HasOnlineTV", "HasMovieSubscription"]


@dataclass
class ChurnData:
    """Cleaned train and test tables plus what cleaning found (for the data report)."""

    train: pd.DataFrame   # FEATURE_COLS + TARGET_COL
    test: pd.DataFrame    # FEATURE_COLS; row i is Id i of the submission
    report: dict          # {"train": {...}, "test": {...}} as returned by clean_table
    source: str           # "built-in sample" or the folder read

    @property
    def X(self) -> pd.DataFrame:
        return self.train[FEATURE_COLS]

    @property
    def y(self) -> np.ndarray:
        return self.train[TARGET_COL].to_numpy()


def read_table(path: str | os.PathLike, with_target: bool) -> pd.DataFrame:
    """Read a churn CSV as text, checking its columns: exactly FEATURE_COLS (+ ``Churn`` for train).

    Raises:
        DataError: the file is missing, empty, or has a missing or an unexpected column.
    """
    path = require_file(path, "churn table")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    expected = FEATURE_COLS + ([TARGET_COL] if with_target else [])
    missing = [c for c in expected if c not in df.columns]
    extra = [c for c in df.columns if c not in expected]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}")
    if extra:
        raise DataError(f"{path}: unexpected column(s) {extra}; expected exactly {expected}")
    if df.empty:
        raise DataError(f"{path}: no data rows")
    _check_row_lengths(path, len(df.columns))
    return df[expected]


def _check_row_lengths(path: Path, n_columns: int) -> None:
    """Every row has as many fields as the header: pandas pads a short row with blanks, which
    would pass as real values (a blank TotalSpent becomes 0)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            if row and len(row) != n_columns:
                raise DataError(f"{path}: line {reader.line_num} has {len(row)} fields, expected {n_columns} "
                                "(as many as the header)")


def _to_number(df: pd.DataFrame, column: str, name: str, allow_blank: bool = False) -> pd.Series:
    """Convert one text column to numbers; a bad cell raises DataError naming file, column, row."""
    text = df[column].str.strip()
    blank = text == ""
    values = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = (values.isna() & ~(blank & allow_blank)) | np.isinf(values)  # 'inf', '1e400' overflow to infinity
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{name}: column '{column}' row {row} (line {row + 2}) has {df[column].iloc[row]!r}, "
                        f"expected a finite number ({int(bad.sum())} bad cell(s) in this column)")
    return values.astype(float)


def clean_table(df: pd.DataFrame, name: str, verbose: bool = True) -> tuple[pd.DataFrame, dict]:
    """Fix the dtypes of a table from :func:`read_table` and report what was found.

    ``ClientPeriod``/``MonthlySpending`` become numbers, blank ``TotalSpent`` becomes 0 (the
    count is printed), ``IsSeniorCitizen`` stays the text "0"/"1" (a category), ``Churn`` becomes
    an int 0/1. Categorical values are kept as they are, blanks included (a category of their own).

    Returns:
        the cleaned copy, and ``{"rows", "nan", "blank_cells", "total_spent_blank",
        "total_spent_blank_nonzero_period", "duplicates", "dtypes"}``.
    """
    out = df.copy()
    blank_cells = {c: int((df[c].str.strip() == "").sum()) for c in df.columns}
    blank_total = df["TotalSpent"].str.strip() == ""
    for column in NUM_COLS:
        out[column] = _to_number(df, column, name, allow_blank=column == "TotalSpent")
    out["TotalSpent"] = out["TotalSpent"].fillna(0.0)
    nonzero_period = int((blank_total & (out["ClientPeriod"] != 0)).sum())
    for column in CAT_COLS:
        out[column] = df[column].str.strip().astype(object)
    if TARGET_COL in df.columns:
        target = _to_number(df, TARGET_COL, name)
        bad = ~target.isin([0, 1])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{name}: column '{TARGET_COL}' row {row} (line {row + 2}) has "
                            f"{df[TARGET_COL].iloc[row]!r}, expected 0 or 1")
        out[TARGET_COL] = target.astype(int)
    report = {
        "rows": len(out),
        "nan": {c: int(v) for c, v in out.isna().sum().items() if v},
        "blank_cells": {c: n for c, n in blank_cells.items() if n},
        "total_spent_blank": int(blank_total.sum()),
        "total_spent_blank_nonzero_period": nonzero_period,
        "duplicates": int(out.duplicated().sum()),
        "dtypes": {c: str(t) for c, t in out.dtypes.items()},
    }
    if verbose:
        note = "" if not nonzero_period else f", {nonzero_period} of them with ClientPeriod > 0"
        print(f"{name}: {report['rows']} rows; TotalSpent blank in {report['total_spent_blank']} rows "
              f"-> set to 0{note}; {report['duplicates']} exact duplicate rows (kept)")
    return out, report


def load_churn(root: str | os.PathLike | None, verbose: bool = True) -> ChurnData:
    """Read and clean ``root/train.csv`` and ``root/test.csv``; ``None`` gives the built-in sample."""
    if root is None:
        train_raw, test_raw = make_sample()
        names, source = ("built-in train", "built-in test"), "built-in sample"
    else:
        root = Path(root)
        train_raw = read_table(root / "train.csv", with_target=True)
        test_raw = read_table(root / "test.csv", with_target=False)
        names, source = (str(root / "train.csv"), str(root / "test.csv")), str(root)
    train, train_report = clean_table(train_raw, names[0], verbose)
    test, test_report = clean_table(test_raw, names[1], verbose)
    return ChurnData(train, test, {"train": train_report, "test": test_report}, source)


def add_features(X: pd.DataFrame) -> pd.DataFrame:
    """Features derived from the raw columns, row by row (nothing is learned from other rows).

    - ``AvgMonthlySpent`` = TotalSpent / ClientPeriod (MonthlySpending when the period is 0):
      what the client paid per month on average;
    - ``SpendingChange`` = MonthlySpending - AvgMonthlySpent: a bill that has grown lately;
    - ``NumServices``: how many of the phone/internet add-ons the client has;
    - ``TenureBucket``: ClientPeriod in years (0-1, 1-2, ..., 5-6), a category.
    """
    out = X.copy()
    period = out["ClientPeriod"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        average = np.where(period > 0, out["TotalSpent"].to_numpy(dtype=float) / period,
                           out["MonthlySpending"].to_numpy(dtype=float))
    out["AvgMonthlySpent"] = average
    out["SpendingChange"] = out["MonthlySpending"] - average
    services = INTERNET_SERVICES + ["HasMultiplePhoneNumbers"]
    out["NumServices"] = (out[services] == "Yes").sum(axis=1).astype(float)
    out["TenureBucket"] = pd.cut(period, bins=[-1, 12, 24, 36, 48, 60, np.inf],
                                 labels=["0-1y", "1-2y", "2-3y", "3-4y", "4-5y", "5y+"]).astype(str).astype(object)
    return out


ENGINEERED_NUM = ["AvgMonthlySpent", "SpendingChange", "NumServices"]
ENGINEERED_CAT = ["TenureBucket"]


def make_sample(n_train: int = 1200, n_test: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A procedural sample in the Kaggle schema, as the text tables :func:`read_table` returns.

    Clients get a tenure, a contract, an internet type and services; the monthly bill is the sum
    of their services' prices plus noise, ``TotalSpent`` about bill x tenure (blank when the
    tenure is 0). Churn follows a logistic model with the signs seen in the real data: short
    tenure, month-to-month contracts, fibre, electronic checks, paperless billing and seniors
    raise it; tech support, online security and long contracts lower it.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    period = np.where(rng.random(n) < 0.03, 0, rng.integers(1, 73, n))
    contract = np.where(rng.random(n) < 0.25 + 0.5 * period / 72,
                        rng.choice(["One year", "Two year"], n), "Month-to-month")
    internet = rng.choice(["DSL", "Fiber optic", "No"], n, p=[0.35, 0.44, 0.21])
    phone = np.where(rng.random(n) < 0.9, "Yes", "No")
    multiple = np.where(phone == "No", "No phone service", np.where(rng.random(n) < 0.45, "Yes", "No"))

    def service(p: float) -> np.ndarray:
        return np.where(internet == "No", "No internet service", np.where(rng.random(n) < p, "Yes", "No"))

    services = {name: service(p) for name, p in zip(INTERNET_SERVICES, [0.35, 0.45, 0.45, 0.35, 0.5, 0.5])}
    monthly = (20 * (phone == "Yes") + 5 * (multiple == "Yes") + 25 * (internet == "DSL")
               + 50 * (internet == "Fiber optic") + sum(8.0 * (v == "Yes") for v in services.values())
               + rng.normal(0, 3, n)).clip(18.25, 120).round(2)
    total = (monthly * period * rng.normal(1, 0.05, n)).round(2)
    senior = (rng.random(n) < 0.16).astype(int)
    paperless = np.where(rng.random(n) < 0.6, "Yes", "No")
    payment = rng.choice(["Electronic check", "Mailed check", "Bank transfer (automatic)",
                          "Credit card (automatic)"], n, p=[0.34, 0.23, 0.22, 0.21])
    logit = (-0.6 - 0.045 * period + 1.3 * (contract == "Month-to-month") - 0.8 * (contract == "Two year")
             + 0.9 * (internet == "Fiber optic") - 0.7 * (internet == "No") + 0.5 * (payment == "Electronic check")
             + 0.35 * (paperless == "Yes") + 0.35 * senior
             - 0.5 * (services["HasTechSupportAccess"] == "Yes")
             - 0.5 * (services["HasOnlineSecurityService"] == "Yes"))
    churn = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    table = pd.DataFrame({
        "ClientPeriod": period, "MonthlySpending": monthly,
        "TotalSpent": np.where(period == 0, " ", total.astype(str)),
        "Sex": rng.choice(["Male", "Female"], n), "IsSeniorCitizen": senior,
        "HasPartner": np.where(rng.random(n) < 0.48, "Yes", "No"),
        "HasChild": np.where(rng.random(n) < 0.3, "Yes", "No"),
        "HasPhoneService": phone, "HasMultiplePhoneNumbers": multiple, "HasInternetService": internet,
        **services, "HasContractPhone": contract, "IsBillingPaperless": paperless, "PaymentMethod": payment,
        TARGET_COL: churn,
    }).astype(str)
    train = table.iloc[:n_train].reset_index(drop=True)
    test = table.iloc[n_train:].drop(columns=TARGET_COL).reset_index(drop=True)
    return train, test
