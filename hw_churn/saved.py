"""The final churn model on disk, in formats that cannot run code when they are read.

A run folder holds ``model.json`` (what the model is, its CV score, the logistic regression's
scaler, categories and coefficients as plain numbers) and, when CatBoost is part of it,
``catboost.cbm`` in CatBoost's own binary format. Nothing is pickled: loading a crafted file
can fail with a message, never execute code. ``model.json`` is checked field by field before
any model is rebuilt.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import DataError

from .data import FEATURE_COLS
from .models import FEATURE_SETS, BlendModel, CatBoostModel, LogRegModel

MODEL_FILE = "model.json"
CATBOOST_FILE = "catboost.cbm"
FORMAT = 1


def save_model(model, folder: str | os.PathLike, meta: dict) -> Path:
    """Write ``model`` (a fitted LogRegModel, CatBoostModel or BlendModel) and ``meta`` (name,
    description, cv_auc, data) into ``folder``; returns the path of ``model.json``."""
    folder = Path(folder)
    spec = _spec(model, folder)
    path = folder / MODEL_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **meta, "feature_cols": FEATURE_COLS, "model": spec}, indent=1))
    os.replace(tmp, path)
    return path


def _spec(model, folder: Path) -> dict:
    if isinstance(model, LogRegModel):
        return {"kind": "logreg", **model.params()}
    if isinstance(model, CatBoostModel):
        model.model_.save_model(str(folder / CATBOOST_FILE), format="cbm")
        return {"kind": "catboost", "file": CATBOOST_FILE, "params": model.params}
    if isinstance(model, BlendModel):
        return {"kind": "blend", "weight": model.weight, "first": _spec(model.first, folder),
                "second": _spec(model.second, folder)}
    raise TypeError(f"cannot save a {type(model).__name__}")


def load_model(folder: str | os.PathLike) -> tuple[object, dict]:
    """The model saved by :func:`save_model` in ``folder``, and its ``model.json``.

    Raises:
        DataError: no ``model.json`` (a ``model.joblib`` of an older version is not read: a
            pickle can run code), or a file that is not what it should be.
    """
    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        old = " (model.joblib files are never loaded, since unpickling can run code: train again)" \
            if (folder / "model.joblib").exists() else " (run hw_churn.train first)"
        raise DataError(f"{path}: saved model not found{old}")
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON model file ({exc})") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or not isinstance(saved.get("model"), dict):
        raise DataError(f"{path}: not a model saved by hw_churn.train (format {FORMAT})")
    if saved.get("feature_cols") != FEATURE_COLS:
        raise DataError(f"{path}: 'feature_cols' differ from the churn schema")
    for key, kind in (("name", str), ("description", str), ("data", str), ("cv_auc", (int, float))):
        if not isinstance(saved.get(key), kind):
            raise DataError(f"{path}: '{key}' is missing or has the wrong type")
    return _build(saved["model"], folder, path, "model"), saved


def _build(spec: dict, folder: Path, path: Path, where: str):
    if not isinstance(spec, dict):
        raise DataError(f"{path}: '{where}' is not an object")
    kind = spec.get("kind")
    if kind == "logreg":
        return LogRegModel.from_params(_checked_linear(spec, path, where))
    if kind == "catboost":
        return _load_catboost(spec, folder, path, where)
    if kind == "blend":
        weight = spec.get("weight")
        if not _is_number(weight) or not 0 <= weight <= 1:
            raise DataError(f"{path}: '{where}.weight' must be a number in [0, 1], got {weight!r}")
        return BlendModel(_build(spec.get("first"), folder, path, f"{where}.first"),
                          _build(spec.get("second"), folder, path, f"{where}.second"), weight)
    raise DataError(f"{path}: '{where}.kind' is {kind!r}, expected logreg, catboost or blend")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(spec: dict, key: str, length: int, path: Path, where: str) -> list[float]:
    values = spec.get(key)
    if not isinstance(values, list) or len(values) != length or not all(_is_number(v) for v in values):
        raise DataError(f"{path}: '{where}.{key}' must be a list of {length} finite numbers")
    return values


def _checked_linear(spec: dict, path: Path, where: str) -> dict:
    """The logistic regression's parameters, every field checked for type and length."""
    if spec.get("features") not in FEATURE_SETS:
        raise DataError(f"{path}: '{where}.features' must be one of {FEATURE_SETS}")
    num_cols, cat_cols, categories = spec.get("num_cols"), spec.get("cat_cols"), spec.get("categories")
    for key, value in (("num_cols", num_cols), ("cat_cols", cat_cols)):
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise DataError(f"{path}: '{where}.{key}' must be a list of column names")
    if not isinstance(categories, list) or len(categories) != len(cat_cols) or not all(
            isinstance(c, list) and all(isinstance(v, str) for v in c) for c in categories):
        raise DataError(f"{path}: '{where}.categories' must be one list of strings per categorical column")
    for key in ("mean", "scale", "num_coef"):
        _numbers(spec, key, len(num_cols), path, where)
    if not all(s > 0 for s in spec["scale"]):
        raise DataError(f"{path}: '{where}.scale' must be positive")
    cat_coef = spec.get("cat_coef")
    if not isinstance(cat_coef, list) or len(cat_coef) != len(categories):
        raise DataError(f"{path}: '{where}.cat_coef' must hold one list per categorical column")
    for i, cats in enumerate(categories):
        _numbers({"w": cat_coef[i]}, "w", len(cats), path, f"{where}.cat_coef[{i}]")
    for key in ("intercept", "C"):
        if not _is_number(spec.get(key)):
            raise DataError(f"{path}: '{where}.{key}' must be a finite number")
    return spec


def _load_catboost(spec: dict, folder: Path, path: Path, where: str) -> CatBoostModel:
    from catboost import CatBoostClassifier, CatBoostError

    name = spec.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise DataError(f"{path}: '{where}.file' must be a file name inside the run folder")
    file = folder / name
    if not file.is_file():
        raise DataError(f"{file}: CatBoost model file not found")
    params = spec.get("params")
    if not isinstance(params, dict):
        raise DataError(f"{path}: '{where}.params' must be an object")
    try:
        classifier = CatBoostClassifier().load_model(str(file), format="cbm")
    except CatBoostError as exc:
        raise DataError(f"{file}: not a CatBoost model file ({str(exc).splitlines()[0]})") from None
    model = CatBoostModel(params)
    model.model_ = classifier
    return model


def predict_checked(model, test: pd.DataFrame, path: Path) -> np.ndarray:
    """The loaded model's churn probabilities for ``test``: one finite number per row, or a
    DataError naming the model file (a file that does not fit this data)."""
    from catboost import CatBoostError

    try:
        probabilities = np.asarray(model.predict(test), dtype=float)
    except (CatBoostError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: the saved model cannot score these rows ({str(exc).splitlines()[0]})") from None
    if probabilities.shape != (len(test),) or not np.isfinite(probabilities).all():
        raise DataError(f"{path}: the saved model gave {probabilities.shape} or non-finite predictions "
                        f"for {len(test)} rows")
    return probabilities
