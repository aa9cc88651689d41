"""Our elastic-net logistic regression against scikit-learn's saga, by cross-validated accuracy."""
from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .models import MyElasticLogisticRegression, sklearn_counterpart


def compare_with_sklearn(X: np.ndarray, y: np.ndarray, l1: float = 0.1, l2: float = 0.1, cv: int = 3,
                         epochs: int = 10, lr: float = 0.1, batch_size: int = 100,
                         max_iter: int = 100) -> dict[str, float]:
    """``cross_val_score`` (accuracy) of ``StandardScaler + ours`` and ``StandardScaler +``
    :func:`sklearn_counterpart` (same penalties, C set for a training fold's size), with
    the seconds each took."""
    ours = make_pipeline(StandardScaler(), MyElasticLogisticRegression(l1, l2))
    fit_params = {"myelasticlogisticregression__epochs": epochs, "myelasticlogisticregression__lr": lr,
                  "myelasticlogisticregression__batch_size": batch_size}
    start = time.perf_counter()
    ours_scores = cross_val_score(ours, X, y, cv=cv, scoring="accuracy", params=fit_params)
    ours_seconds = time.perf_counter() - start
    n_train = len(X) * (cv - 1) // cv
    reference = make_pipeline(StandardScaler(), sklearn_counterpart(l1, l2, n_train, max_iter=max_iter))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref_scores = cross_val_score(reference, X, y, cv=cv, scoring="accuracy")
    return {"ours_accuracy": float(ours_scores.mean()), "sklearn_accuracy": float(ref_scores.mean()),
            "ours_seconds": ours_seconds, "sklearn_seconds": time.perf_counter() - start}
