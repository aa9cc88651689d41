"""The churn models, the cross-validation loop, the blend, and the model files of a run.

Every model here has ``fit(X, y)`` on a cleaned feature table (``data.FEATURE_COLS``) and
``predict(X)`` returning churn probabilities, so one CV loop, one blend and one model file
serve them all:

- :class:`LogRegModel`: the course's linear model, scaled numerics + one-hot categoricals,
  ``C`` chosen from ``C_GRID`` by ROC-AUC with an inner stratified CV (``GridSearchCV``);
- :class:`CatBoostModel`: CatBoost on the raw columns with native categorical features;
- :class:`BlendModel`: ``w * p_linear + (1 - w) * p_boosting``.

The CV loop is written out (:func:`cross_validate`) because scikit-learn cannot ``clone`` a
``CatBoostClassifier`` built with ``cat_features``, so ``cross_val_score`` fails on it.

The model files
    ``hw_churn.train`` ends with :func:`save_model`: the run folder gets ``model.json`` (what
    the model is, its CV score, the logistic regression's scaler, categories and coefficients
    as plain numbers) and, when CatBoost is part of the model, ``catboost.cbm`` in CatBoost's
    own binary format. Nothing is pickled, so reading a crafted file can fail with a message
    but never runs code. :func:`load_model` (``hw_churn.load_model``) reads them back, every
    field of ``model.json`` checked before any model is rebuilt; ``submit`` loads a run
    through it alone.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core import runs
from core.data import DataError
from core.metrics import roc_auc

from .data import CAT_COLS, ENGINEERED_CAT, ENGINEERED_NUM, FEATURE_COLS, NUM_COLS, add_features

C_GRID = [100, 10, 1, 0.1, 0.01, 0.001]
FEATURE_SETS = ("raw", "log", "log+spending")
# the parameters the course's best Kaggle submission used
CATBOOST_COURSE = dict(iterations=500, learning_rate=0.03, boosting_type="Ordered")
# searched with early stopping on a validation fold; `iterations` is the cap
CATBOOST_GRID = [dict(depth=depth, learning_rate=0.06, l2_leaf_reg=l2) for depth in (4, 6) for l2 in (3, 10)]
CATBOOST_GRID_QUICK = [dict(depth=4, learning_rate=0.08, l2_leaf_reg=3),
                       dict(depth=6, learning_rate=0.08, l2_leaf_reg=3)]


def linear_features(X: pd.DataFrame, features: str = "log") -> tuple[pd.DataFrame, list[str], list[str]]:
    """The table a linear model sees, with its numeric and categorical column lists.

    ``raw``: the 3 numerics and 16 categoricals. ``log``: plus ``log1p`` of ClientPeriod and
    TotalSpent; both are strongly skewed, and churn falls with the log of tenure rather than
    linearly, which a linear model cannot bend to on its own. ``log+spending``: plus the
    features of :func:`data.add_features`.
    """
    if features not in FEATURE_SETS:
        raise ValueError(f"features must be one of {FEATURE_SETS}, got {features!r}")
    num, cat = list(NUM_COLS), list(CAT_COLS)
    out = X[num + cat].copy()
    if features in ("log", "log+spending"):
        out["LogClientPeriod"] = np.log1p(out["ClientPeriod"].clip(lower=0))
        out["LogTotalSpent"] = np.log1p(out["TotalSpent"].clip(lower=0))
        num += ["LogClientPeriod", "LogTotalSpent"]
    if features == "log+spending":
        extra = add_features(X)
        for column in ENGINEERED_NUM + ENGINEERED_CAT:
            out[column] = extra[column]
        num += ENGINEERED_NUM
        cat += ENGINEERED_CAT
    return out, num, cat


def make_logreg(num_cols: list[str], cat_cols: list[str], C: float = 1.0) -> Pipeline:
    """StandardScaler on the numerics, one-hot on the categoricals (categories unseen in
    training become all-zero rows), then L2 logistic regression."""
    columns = ColumnTransformer([
        ("scale", StandardScaler(), num_cols),
        ("onehot", OneHotEncoder(handle_unknown="ignore"), cat_cols),
    ])
    return Pipeline([("columns", columns),
                     ("logreg", LogisticRegression(C=C, solver="liblinear", max_iter=1000))])


class LogRegModel:
    """Logistic regression with ``C`` chosen from ``Cs`` by ROC-AUC over ``inner_folds`` stratified
    folds of the training rows it is given (so, inside a CV fold, the choice never sees that
    fold's held-out rows), then refitted on all of them."""

    def __init__(self, features: str = "log", Cs: list[float] = C_GRID, inner_folds: int = 5, seed: int = 1):
        self.features, self.Cs, self.inner_folds, self.seed = features, list(Cs), inner_folds, seed

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "LogRegModel":
        table, num, cat = linear_features(X, self.features)
        search = GridSearchCV(make_logreg(num, cat), {"logreg__C": self.Cs}, scoring="roc_auc",
                              cv=StratifiedKFold(self.inner_folds, shuffle=True, random_state=self.seed))
        search.fit(table, y)
        self.pipeline_ = search.best_estimator_
        self.C_ = float(search.best_params_["logreg__C"])
        self.search_auc_ = float(search.best_score_)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        table, _, _ = linear_features(X, self.features)
        if self.pipeline_ is None:  # loaded from its parameters
            return linear_probabilities(self.params_, table)
        return self.pipeline_.predict_proba(table)[:, 1]

    def describe(self) -> str:
        return f"C={self.C_:g}"

    def params(self) -> dict:
        """The fitted model as plain numbers and strings (for ``model.json``): the scaler's
        means and scales, the one-hot categories, the coefficients and the intercept."""
        columns, logreg = self.pipeline_.named_steps["columns"], self.pipeline_.named_steps["logreg"]
        scaler, onehot = columns.named_transformers_["scale"], columns.named_transformers_["onehot"]
        num_cols, cat_cols = list(columns.transformers_[0][2]), list(columns.transformers_[1][2])
        coef = logreg.coef_[0].tolist()
        cat_coef, start = [], len(num_cols)
        for categories in onehot.categories_:
            cat_coef.append(coef[start:start + len(categories)])
            start += len(categories)
        return {"features": self.features, "C": self.C_, "num_cols": num_cols, "mean": scaler.mean_.tolist(),
                "scale": scaler.scale_.tolist(), "num_coef": coef[:len(num_cols)], "cat_cols": cat_cols,
                "categories": [[str(c) for c in cats] for cats in onehot.categories_], "cat_coef": cat_coef,
                "intercept": float(logreg.intercept_[0])}

    @classmethod
    def from_params(cls, params: dict) -> "LogRegModel":
        """A model that predicts from :meth:`params` alone (no scikit-learn objects)."""
        model = cls(params["features"])
        model.pipeline_, model.params_, model.C_ = None, params, float(params["C"])
        return model


def linear_probabilities(params: dict, table: pd.DataFrame) -> np.ndarray:
    """``sigmoid(b + sum_j w_j (x_j - mean_j) / scale_j + sum_k w_k[category of x_k])`` with
    :meth:`LogRegModel.params`: what the fitted pipeline computes (StandardScaler, then
    one-hot with unseen categories as all-zero, then logistic regression)."""
    numeric = (table[params["num_cols"]].to_numpy(dtype=float) - params["mean"]) / params["scale"]
    z = params["intercept"] + numeric @ np.asarray(params["num_coef"])
    for column, categories, weights in zip(params["cat_cols"], params["categories"], params["cat_coef"]):
        lookup = dict(zip(categories, weights))
        z = z + table[column].astype(str).map(lookup).fillna(0.0).to_numpy(dtype=float)
    return 1.0 / (1.0 + np.exp(-z))


class CatBoostModel:
    """``CatBoostClassifier`` on the raw columns, the 16 categoricals as native categorical
    features (as text: IsSeniorCitizen is "0"/"1"). No files are written (``allow_writing_files``
    off), so nothing lands in the working directory."""

    def __init__(self, params: dict | None = None, seed: int = 1, threads: int = 2):
        self.params, self.seed, self.threads = dict(params or {}), seed, threads

    def classifier(self, **extra) -> CatBoostClassifier:
        return CatBoostClassifier(**{**self.params, **extra}, cat_features=CAT_COLS, random_seed=self.seed,
                                  thread_count=self.threads, verbose=0, allow_writing_files=False)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "CatBoostModel":
        self.model_ = self.classifier().fit(X[NUM_COLS + CAT_COLS], y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(X[NUM_COLS + CAT_COLS])[:, 1]

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) or "defaults"


class BlendModel:
    """Probability average ``weight * first + (1 - weight) * second`` of two fitted models."""

    def __init__(self, first, second, weight: float):
        self.first, self.second, self.weight = first, second, float(weight)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> "BlendModel":
        self.first.fit(X, y)
        self.second.fit(X, y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.weight * self.first.predict(X) + (1 - self.weight) * self.second.predict(X)

    def describe(self) -> str:
        return f"{self.weight:.1f} x logreg ({self.first.describe()}) + {1 - self.weight:.1f} x catboost"


# -- cross-validation --------------------------------------------------------------------------

def stratified_folds(y: np.ndarray, n_splits: int = 5, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, held-out) index pairs every model is scored on: stratified, shuffled."""
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


@dataclass
class CVResult:
    """One model's cross-validation: ROC-AUC per fold and the out-of-fold predictions."""

    name: str
    fold_auc: list[float]
    oof: np.ndarray
    details: list[str] = field(default_factory=list)  # what each fold's model chose (C, weight)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_auc))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_auc))


def cross_validate(make_model: Callable[[], object], X: pd.DataFrame, y: np.ndarray, folds, name: str,
                   log: Callable[[str], None] = print) -> CVResult:
    """Fit a fresh ``make_model()`` on each fold's training rows and score its held-out rows."""
    oof = np.full(len(y), np.nan)
    aucs, details = [], []
    for k, (train_idx, val_idx) in enumerate(folds, 1):
        model = make_model().fit(X.iloc[train_idx], y[train_idx])
        oof[val_idx] = model.predict(X.iloc[val_idx])
        aucs.append(roc_auc(y[val_idx], oof[val_idx]))
        details.append(model.describe() if hasattr(model, "describe") else "")
        log(f"  {name} fold {k}/{len(folds)}: ROC-AUC {aucs[-1]:.4f}" + (f" ({details[-1]})" if details[-1] else ""))
    result = CVResult(name, aucs, oof, details)
    log(f"  {name}: CV ROC-AUC {result.mean:.4f} ± {result.std:.4f}")
    return result


def best_blend_weight(p_first: np.ndarray, p_second: np.ndarray, y: np.ndarray,
                      grid: np.ndarray = np.linspace(0, 1, 11)) -> float:
    """The weight of ``p_first`` in the probability average with the highest ROC-AUC
    (ties go to the weight closest to 0.5)."""
    scores = [(roc_auc(y, w * p_first + (1 - w) * p_second), -abs(w - 0.5), w) for w in grid]
    return float(max(scores)[2])


def cross_validate_blend(first: CVResult, second: CVResult, y: np.ndarray, folds, name: str = "blend",
                         log: Callable[[str], None] = print) -> CVResult:
    """CV of the blend of two models' out-of-fold predictions, without leaking: the weight
    scored on fold k is chosen on the other folds' out-of-fold predictions only."""
    oof = np.full(len(y), np.nan)
    aucs, details = [], []
    for k, (_, val_idx) in enumerate(folds, 1):
        others = np.setdiff1d(np.arange(len(y)), val_idx)
        weight = best_blend_weight(first.oof[others], second.oof[others], y[others])
        oof[val_idx] = weight * first.oof[val_idx] + (1 - weight) * second.oof[val_idx]
        aucs.append(roc_auc(y[val_idx], oof[val_idx]))
        details.append(f"weight={weight:.1f}")
        log(f"  {name} fold {k}/{len(folds)}: ROC-AUC {aucs[-1]:.4f} (weight of logreg {weight:.1f})")
    result = CVResult(name, aucs, oof, details)
    log(f"  {name}: CV ROC-AUC {result.mean:.4f} ± {result.std:.4f}")
    return result


# -- CatBoost search ---------------------------------------------------------------------------

def search_catboost(X: pd.DataFrame, y: np.ndarray, candidates: list[dict], seed: int = 1, threads: int = 2,
                    max_iterations: int = 2000, patience: int = 100, valid_size: float = 0.2,
                    log: Callable[[str], None] = print) -> tuple[dict, pd.DataFrame]:
    """Pick CatBoost parameters on one stratified validation split, with early stopping.

    Each candidate trains up to ``max_iterations`` trees, stops after ``patience`` rounds
    without a better validation AUC and is scored at its best iteration. The winner's
    parameters come back with ``iterations`` set to that best iteration count, ready for CV
    and for the final fit on all rows. The validation rows are also in the CV folds, so the
    CV score of the winner is slightly optimistic (the search saw a fifth of the labels); the
    other steps of the study choose everything inside their training folds.

    Returns:
        the chosen parameters, and a table of every candidate (params, valid AUC, best iteration).
    """
    X = X[NUM_COLS + CAT_COLS]
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=valid_size, stratify=y, random_state=seed)
    rows = []
    for k, params in enumerate(candidates, 1):
        model = CatBoostModel(params, seed, threads).classifier(
            iterations=max_iterations, eval_metric="AUC", early_stopping_rounds=patience, use_best_model=True)
        model.fit(X_fit, y_fit, eval_set=(X_val, y_val))
        auc = roc_auc(y_val, model.predict_proba(X_val)[:, 1])
        rows.append({**params, "valid_auc": auc, "best_iteration": model.get_best_iteration() + 1})
        log(f"  catboost search {k}/{len(candidates)}: {params} -> valid ROC-AUC {auc:.4f} "
            f"at {rows[-1]['best_iteration']} trees")
    table = pd.DataFrame(rows)
    best = table.iloc[int(table["valid_auc"].to_numpy().argmax())]
    chosen = {**candidates[int(best.name)], "iterations": int(best["best_iteration"])}
    return chosen, table


# -- the model files ---------------------------------------------------------------------------

HOMEWORK = "hw_churn"
KIND = "tabular"              # LoadedModel.kind: rows of a cleaned churn table in, churn probabilities out
MODEL_FILE = "model.json"
CATBOOST_FILE = "catboost.cbm"
MODEL_FORMAT = 1
META_KEYS = (("name", str), ("description", str), ("data", str), ("cv_auc", (int, float)))


def save_model(model, run: str | os.PathLike, meta: dict) -> Path:
    """Write ``model`` (a fitted LogRegModel, CatBoostModel or BlendModel) into the run folder:
    ``model.json`` with ``meta`` (``name``, ``description``, ``cv_auc``, ``data``) beside the
    model's description, plus ``catboost.cbm`` when CatBoost is part of it. Returns the path
    of ``model.json``, which is written last and atomically: a run with a ``model.json`` has
    its whole model."""
    run = Path(run)
    spec = _spec(model, run)
    path = run / MODEL_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": MODEL_FORMAT, **meta, "feature_cols": FEATURE_COLS, "model": spec},
                              indent=1))
    os.replace(tmp, path)
    return path


def _spec(model, run: Path) -> dict:
    if isinstance(model, LogRegModel):
        return {"kind": "logreg", **model.params()}
    if isinstance(model, CatBoostModel):
        model.model_.save_model(str(run / CATBOOST_FILE), format="cbm")
        return {"kind": "catboost", "file": CATBOOST_FILE, "params": model.params}
    if isinstance(model, BlendModel):
        return {"kind": "blend", "weight": model.weight, "first": _spec(model.first, run),
                "second": _spec(model.second, run)}
    raise TypeError(f"cannot save a {type(model).__name__}")


def load_model(run: str | os.PathLike) -> runs.LoadedModel:
    """The final model of a ``hw_churn.train`` run, rebuilt from its model files.

    Returns:
        a :class:`core.runs.LoadedModel` of kind ``"tabular"``: ``model`` is the fitted
        LogRegModel, CatBoostModel or BlendModel (``model.predict(X)`` gives the churn
        probability of each row of a table cleaned by :func:`hw_churn.data.clean_table`);
        ``config`` is the ``"model"`` entry of ``model.json`` (what rebuilds it); ``extras``
        holds ``name``, ``description``, ``cv_auc``, ``data`` and ``feature_cols``;
        ``settings`` is the run's ``args.json`` and ``metrics`` its ``metrics.json``.

    Raises:
        UserError: not a hw_churn run folder (no folder, no ``args.json``, a run of another
            homework); no ``model.json`` (the message says to train the run again); a
            ``model.json`` or ``catboost.cbm`` that this code does not read (a DataError
            naming the file and the faulty field, saying to train the run again).
    """
    run = Path(run)
    settings = runs.read_args(run, HOMEWORK)
    path = run / MODEL_FILE
    if not path.is_file():
        raise DataError(f"{run}: no {MODEL_FILE}, so no trained model (the run stopped before its end, or was "
                        f"written by an older version of this project); train it again (its options are in "
                        f"{run / runs.ARGS_FILE}: pass that file as --config)")
    try:
        saved = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _unreadable(path, f"not valid JSON ({exc})") from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT or not isinstance(saved.get("model"), dict):
        raise _unreadable(path, f"not a model file of hw_churn.train (format {MODEL_FORMAT})")
    if saved.get("feature_cols") != FEATURE_COLS:
        raise _unreadable(path, "'feature_cols' differ from the churn schema")
    for key, kind in META_KEYS:
        if not isinstance(saved.get(key), kind):
            raise _unreadable(path, f"'{key}' is missing or has the wrong type")
    model = _build(saved["model"], run, path, "model")
    extras = {key: saved[key] for key, _ in META_KEYS}
    extras["feature_cols"] = list(saved["feature_cols"])
    return runs.LoadedModel(run=run, homework=HOMEWORK, kind=KIND, model=model, config=saved["model"],
                            extras=extras, settings=settings, metrics=runs.read_metrics(run))


def _unreadable(path: Path, problem: str) -> DataError:
    """The one error for a model file this code does not read: its path, what is wrong, what to do."""
    return DataError(f"{path}: {problem}; train the run again to rewrite it")


def _build(spec: dict, run: Path, path: Path, where: str):
    if not isinstance(spec, dict):
        raise _unreadable(path, f"'{where}' is not an object")
    kind = spec.get("kind")
    if kind == "logreg":
        return LogRegModel.from_params(_checked_linear(spec, path, where))
    if kind == "catboost":
        return _load_catboost(spec, run, path, where)
    if kind == "blend":
        weight = spec.get("weight")
        if not _is_number(weight) or not 0 <= weight <= 1:
            raise _unreadable(path, f"'{where}.weight' must be a number in [0, 1], got {weight!r}")
        return BlendModel(_build(spec.get("first"), run, path, f"{where}.first"),
                          _build(spec.get("second"), run, path, f"{where}.second"), weight)
    raise _unreadable(path, f"'{where}.kind' is {kind!r}, expected logreg, catboost or blend")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(spec: dict, key: str, length: int, path: Path, where: str) -> list[float]:
    values = spec.get(key)
    if not isinstance(values, list) or len(values) != length or not all(_is_number(v) for v in values):
        raise _unreadable(path, f"'{where}.{key}' must be a list of {length} finite numbers")
    return values


def _checked_linear(spec: dict, path: Path, where: str) -> dict:
    """The logistic regression's parameters, every field checked for type and length."""
    if spec.get("features") not in FEATURE_SETS:
        raise _unreadable(path, f"'{where}.features' must be one of {FEATURE_SETS}")
    num_cols, cat_cols, categories = spec.get("num_cols"), spec.get("cat_cols"), spec.get("categories")
    for key, value in (("num_cols", num_cols), ("cat_cols", cat_cols)):
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise _unreadable(path, f"'{where}.{key}' must be a list of column names")
    if not isinstance(categories, list) or len(categories) != len(cat_cols) or not all(
            isinstance(c, list) and all(isinstance(v, str) for v in c) for c in categories):
        raise _unreadable(path, f"'{where}.categories' must be one list of strings per categorical column")
    for key in ("mean", "scale", "num_coef"):
        _numbers(spec, key, len(num_cols), path, where)
    if not all(s > 0 for s in spec["scale"]):
        raise _unreadable(path, f"'{where}.scale' must be positive")
    cat_coef = spec.get("cat_coef")
    if not isinstance(cat_coef, list) or len(cat_coef) != len(categories):
        raise _unreadable(path, f"'{where}.cat_coef' must hold one list per categorical column")
    for i, cats in enumerate(categories):
        _numbers({"w": cat_coef[i]}, "w", len(cats), path, f"{where}.cat_coef[{i}]")
    for key in ("intercept", "C"):
        if not _is_number(spec.get(key)):
            raise _unreadable(path, f"'{where}.{key}' must be a finite number")
    return spec


def _load_catboost(spec: dict, run: Path, path: Path, where: str) -> CatBoostModel:
    from catboost import CatBoostError

    name = spec.get("file")
    if not isinstance(name, str) or Path(name).name != name:
        raise _unreadable(path, f"'{where}.file' must be a file name inside the run folder")
    file = run / name
    if not file.is_file():
        raise _unreadable(file, "CatBoost model file not found")
    params = spec.get("params")
    if not isinstance(params, dict):
        raise _unreadable(path, f"'{where}.params' must be an object")
    try:
        classifier = CatBoostClassifier().load_model(str(file), format="cbm")
    except CatBoostError as exc:
        raise _unreadable(file, f"not a CatBoost model file ({str(exc).splitlines()[0]})") from None
    model = CatBoostModel(params)
    model.model_ = classifier
    return model
