"""Part 3: logistic regression with an elastic-net penalty, trained by mini-batch gradient descent.

The loss minimised is the course's

    L(w) = mean_i logloss(y_i, sigmoid(x_i . w)) + l1 * |w_1..k|_1 + l2 * |w_1..k|_2^2,

with the bias ``w_0`` not penalised; its (sub)gradient on a batch is

    X^T (p - y) / n + l1 * sign(w') + 2 * l2 * w',   w' = w with w'_0 = 0.
"""
from __future__ import annotations

import numpy as np
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from .data import generate_batches

CLIP = 1e-10


def logit(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.dot(x, w)


def sigmoid(h: np.ndarray) -> np.ndarray:
    return 1.0 / (1 + np.exp(-h))


class MyElasticLogisticRegression(ClassifierMixin, BaseEstimator):
    """Binary logistic regression with L1 and L2 penalties (labels 0/1).

    Weights start as ``np.random.seed(42); np.random.randn(k + 1)`` (drawn from a
    ``RandomState(42)``, the same numbers) the first time ``fit`` is called; calling ``fit``
    again continues from the current weights, as in the course's template.
    """

    def __init__(self, l1_coef: float, l2_coef: float):
        self.l1_coef = l1_coef
        self.l2_coef = l2_coef
        self.w = None

    def get_grad(self, X_batch: np.ndarray, y_batch: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """Gradient of the penalised mean log-loss; ``X_batch`` already has the column of ones."""
        w_no_bias = self.w.copy()
        w_no_bias[0] = 0.0
        data_term = X_batch.T @ (predictions - y_batch) / len(y_batch)
        return data_term + self.l1_coef * np.sign(w_no_bias) + 2 * self.l2_coef * w_no_bias

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int = 10, lr: float = 0.1,
            batch_size: int = 100) -> list[float]:
        """Mini-batch gradient descent; returns the (unpenalised) log-loss of every batch."""
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        n, k = X.shape
        if self.w is None:
            self.w = np.random.RandomState(42).randn(k + 1)
        self.classes_ = np.array([0, 1])
        X_train = np.concatenate((np.ones((n, 1)), X), axis=1)
        losses = []
        for _ in range(epochs):
            for X_batch, y_batch in generate_batches(X_train, y, batch_size):
                predictions = sigmoid(logit(X_batch, self.w))
                losses.append(self._loss(y_batch, predictions))
                self.w -= lr * self.get_grad(X_batch, y_batch, predictions)
        return losses

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(y = 1 | x) for each row (one column, as the course returns it)."""
        X = np.asarray(X, dtype=np.float64)
        return sigmoid(logit(np.concatenate((np.ones((len(X), 1)), X), axis=1), self.w))

    def predict(self, X: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Labels 0/1: ``predict_proba(X) >= threshold``."""
        return (self.predict_proba(X) >= threshold).astype(np.int64)

    def get_weights(self) -> np.ndarray:
        """``[w0 (bias), w1, ..., wk]``."""
        return self.w

    def penalised_loss(self, X_with_ones: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
        """The full objective ``L(w)`` of the module docstring (unclipped), for gradient checks."""
        w = self.w if w is None else w
        p = sigmoid(logit(X_with_ones, w))
        data = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        return float(data + self.l1_coef * np.abs(w[1:]).sum() + self.l2_coef * np.sum(w[1:] ** 2))

    @staticmethod
    def _loss(y: np.ndarray, p: np.ndarray) -> float:
        """Mean log-loss with ``p`` clipped to [1e-10, 1 - 1e-10]."""
        p = np.clip(p, CLIP, 1 - CLIP)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def sklearn_counterpart(l1_coef: float, l2_coef: float, n_samples: int, **kwargs) -> LogisticRegression:
    """scikit-learn's saga elastic-net logistic regression with the same objective as ours.

    scikit-learn minimises ``C * sum_i logloss_i + (1 - r)/2 |w|_2^2 + r |w|_1`` (bias not
    penalised). Divided by ``C n`` this is ``mean logloss + (1 - r)/(2 C n) |w|^2 +
    r/(C n) |w|_1``; matching ``l2`` and ``l1`` gives

        r = l1 / (l1 + 2 l2),      C = 1 / (n (l1 + 2 l2)).

    With l1 = l2 = 0.1 that is ``l1_ratio = 1/3`` (not 0.5) and ``C = 1 / (0.3 n)``. ``n``
    is the number of rows the model is fitted on (in cross-validation, a training fold).
    """
    total = l1_coef + 2 * l2_coef
    params = dict(solver="saga", C=1.0 / (n_samples * total), l1_ratio=l1_coef / total, **kwargs)
    major, minor = (int(part) for part in sklearn.__version__.split(".")[:2])
    if (major, minor) < (1, 8):  # 1.8 deprecated penalty=; l1_ratio alone selects the mix
        params["penalty"] = "elasticnet"
    return LogisticRegression(**params)
