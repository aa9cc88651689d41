"""The notebook's steps as functions: split, logistic-regression demos, kNN grid search, quiz.

Each function does one step of HW1 with the course's settings and returns plain numbers, so
``train.py`` reads as the notebook does and the tests can check each step on its own.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier

KNN_GRID = {"n_neighbors": range(1, 11), "weights": ["uniform", "distance"], "metric": ["manhattan", "euclidean"]}
QUIZ_CLASS_INDEX = 2  # Q5 asks for pred_freq[2]: the third class (cover type 3 in the forest data)


def split(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The course's split: ``train_test_split(test_size=0.2, random_state=42)``."""
    return train_test_split(X, y, test_size=0.2, random_state=42)


def liblinear_demo(X_train, y_train, X_test, y_test) -> float:
    """Test accuracy of the course's ``LogisticRegression(C=1, solver='liblinear')``: one
    binary liblinear model per class (one-versus-rest), written as ``OneVsRestClassifier``
    so that it is that model on every supported scikit-learn (``LogisticRegression`` itself
    no longer fits one-versus-rest from scikit-learn 1.8 on)."""
    model = OneVsRestClassifier(LogisticRegression(C=1, solver="liblinear")).fit(X_train, y_train)
    return float(accuracy_score(y_test, model.predict(X_test)))


def saga_penalty_grid() -> dict:
    """The course's ``{'C': 1..4, 'penalty': ['l1', 'l2']}`` grid for the saga solver.

    scikit-learn 1.8 deprecated ``penalty``: there the same two penalties are ``l1_ratio=1``
    (L1) and ``l1_ratio=0`` (L2); older versions take ``penalty`` itself.
    """
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        return {"C": np.arange(1, 5), "l1_ratio": [1.0, 0.0]}
    return {"C": np.arange(1, 5), "penalty": ["l1", "l2"]}


def penalty_name(params: dict) -> str:
    """``'l1'`` or ``'l2'`` from a grid point of :func:`saga_penalty_grid`."""
    if "penalty" in params:
        return params["penalty"]
    return "l1" if params["l1_ratio"] == 1.0 else "l2"


def saga_grid(X, y, cv: int = 5, n_jobs: int = -1, verbose: int = 1) -> tuple[dict, float]:
    """Grid-search saga logistic regression on the whole data (as the course does, so the
    score is optimistic); return the best parameters, as ``{"C": int, "penalty": "l1" or
    "l2"}``, and the refitted model's accuracy on that same data.

    saga stops at its default ``max_iter=100`` on unscaled features, as in the course; its
    ConvergenceWarnings are silenced.
    """
    grid = GridSearchCV(LogisticRegression(solver="saga"), saga_penalty_grid(), n_jobs=n_jobs, cv=cv,
                        refit=True, scoring="accuracy", verbose=verbose)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    params = {"C": int(grid.best_params_["C"]), "penalty": penalty_name(grid.best_params_)}
    return params, float(accuracy_score(y, grid.best_estimator_.predict(X)))


def default_knn_accuracy(X_train, y_train, X_test, y_test) -> float:
    """Q1: test accuracy of ``KNeighborsClassifier()`` with its defaults."""
    model = KNeighborsClassifier().fit(X_train, y_train)
    return float(accuracy_score(y_test, model.predict(X_test)))


def knn_grid(X, y, cv: int = 5, n_jobs: int = -1, verbose: int = 1) -> GridSearchCV:
    """Grid search (accuracy) over k 1..10 x uniform/distance x manhattan/euclidean on the
    whole data, refitted on it with the best parameters."""
    grid = GridSearchCV(KNeighborsClassifier(), KNN_GRID, cv=cv, scoring="accuracy", n_jobs=n_jobs, verbose=verbose)
    return grid.fit(X, y)


@dataclass
class QuizAnswers:
    q1_accuracy: float
    q2_metric: str
    q3_n_neighbors: int
    q4_weights: str
    q5_pred_freq: float

    def lines(self) -> list[str]:
        return [f"Q1 default kNN test accuracy: {self.q1_accuracy:.4f}",
                f"Q2 best metric: {self.q2_metric}",
                f"Q3 best n_neighbors: {self.q3_n_neighbors}",
                f"Q4 best weights: {self.q4_weights}",
                f"Q5 pred_freq[{QUIZ_CLASS_INDEX}] (mean predicted probability of the third class): "
                f"{self.q5_pred_freq:.2f}"]


def quiz_answers(default_accuracy: float, best_params: dict, pred_prob: np.ndarray) -> QuizAnswers:
    """The five quiz answers from the quantities the notebook computes them from.

    Args:
        default_accuracy: Q1, the default kNN's test accuracy.
        best_params: the kNN grid's ``best_params_`` (Q2 metric, Q3 k, Q4 weights).
        pred_prob: ``predict_proba`` of the refitted best model on the test split; Q5 is the
            mean over test rows of the third column, ``pred_prob.mean(axis=0)[2]``, rounded
            to 2 decimals.
    """
    pred_freq = np.asarray(pred_prob).mean(axis=0)
    return QuizAnswers(q1_accuracy=round(float(default_accuracy), 4), q2_metric=str(best_params["metric"]),
                       q3_n_neighbors=int(best_params["n_neighbors"]), q4_weights=str(best_params["weights"]),
                       q5_pred_freq=round(float(pred_freq[QUIZ_CLASS_INDEX]), 2))
