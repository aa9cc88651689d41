"""Fit time of MyElasticLogisticRegression against scikit-learn's saga with the same penalties.

Both are fitted on standardised features of the MNIST 0/1 test digits (``$DLS_DATA/mnist``,
2115 x 784) or, without it, of breast cancer (569 x 30): ours for ``--epochs`` epochs of
mini-batch descent (the course's default 10), scikit-learn until its tolerance or
``max_iter=100``. Median of ``--repeats`` fits. Prints one JSON line with both times, their
ratio (scikit-learn / ours; above 1: ours is faster) and both training accuracies.

    DLS_DATA=../shared/data python bench/logreg.py [--epochs 10] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from hw_logreg.data import load_breast_cancer_data, load_mnist_01
from hw_logreg.models import MyElasticLogisticRegression, sklearn_counterpart


def median_seconds(fit, repeats: int) -> tuple[float, object]:
    times, model = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        model = fit()
        times.append(time.perf_counter() - start)
    return statistics.median(times), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--l1", type=float, default=0.1)
    parser.add_argument("--l2", type=float, default=0.1)
    args = parser.parse_args()
    mnist = Path(os.environ.get("DLS_DATA", "")) / "mnist"
    if os.environ.get("DLS_DATA") and mnist.is_dir():
        (X, y), name = load_mnist_01(mnist), "mnist 0/1 test digits"
    else:
        (X, y), name = load_breast_cancer_data(), "breast cancer"
    X = StandardScaler().fit_transform(X)

    def fit_ours():
        model = MyElasticLogisticRegression(args.l1, args.l2)
        model.fit(X, y, epochs=args.epochs)
        return model

    def fit_sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return sklearn_counterpart(args.l1, args.l2, len(X), max_iter=100).fit(X, y)

    ours_s, ours = median_seconds(fit_ours, args.repeats)
    sklearn_s, reference = median_seconds(fit_sklearn, args.repeats)
    print(json.dumps({
        "data": f"{name} {X.shape[0]} x {X.shape[1]}", "l1": args.l1, "l2": args.l2, "epochs": args.epochs,
        "sklearn_iterations": int(reference.n_iter_[0]), "repeats": args.repeats,
        "ours_fit_s": round(ours_s, 4), "sklearn_saga_fit_s": round(sklearn_s, 4),
        "ratio_sklearn_over_ours": round(sklearn_s / ours_s, 2),
        "ours_train_accuracy": round(float((ours.predict(X) == y).mean()), 4),
        "sklearn_train_accuracy": round(float(reference.score(X, y)), 4),
    }))


if __name__ == "__main__":
    main()
