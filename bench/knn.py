"""Prediction speed of hw_knn.knn against scikit-learn's brute force, kd-tree and ball tree.

Data shaped like the course's forest sample (10000 x 54, integers: 10 wide-range columns, 4 + 40
one-hot columns, 7 classes), split 8000 train / 2000 test. Each model is fitted once and its
``predict`` timed ``--repeats`` times (median); the figure includes everything ``predict``
does (distances, neighbour search, vote). Prints one JSON line: seconds per predict, the ratio
of each scikit-learn algorithm's time to ours (above 1: ours is faster), and whether our
predictions equal scikit-learn's brute force.

    python bench/knn.py [--metric manhattan] [--weights distance] [--k 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from hw_knn.knn import KNNClassifier


def covtype_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    continuous = rng.integers(0, 3000, size=(n, 10))
    area = np.eye(4)[rng.integers(0, 4, n)]
    soil = np.eye(40)[rng.integers(0, 40, n)]
    X = np.hstack([continuous, area, soil]).astype(np.float64)
    y = (continuous[:, 0] // 500 + area.argmax(1)) % 7 + 1
    return X, y


def median_time(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metric", default="manhattan", choices=["manhattan", "euclidean"])
    parser.add_argument("--weights", default="distance", choices=["uniform", "distance"])
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X, y = covtype_like(10000)
    X_train, y_train, X_test = X[:8000], y[:8000], X[8000:]
    params = dict(n_neighbors=args.k, weights=args.weights, metric=args.metric)

    ours = KNNClassifier(**params).fit(X_train, y_train)
    result = {"data": "covtype-like 8000 train / 2000 test x 54", **params, "repeats": args.repeats,
              "torch_threads": torch.get_num_threads()}
    ours_time, ours_pred = median_time(lambda: ours.predict(X_test), args.repeats)
    result["ours_s"] = round(ours_time, 4)
    for algorithm in ("brute", "kd_tree", "ball_tree"):
        model = KNeighborsClassifier(algorithm=algorithm, **params).fit(X_train, y_train)
        seconds, pred = median_time(lambda: model.predict(X_test), args.repeats)
        result[f"sklearn_{algorithm}_s"] = round(seconds, 4)
        result[f"ratio_{algorithm}_over_ours"] = round(seconds / ours_time, 2)
        if algorithm == "brute":
            result["predictions_equal_brute"] = bool((pred == ours_pred).all())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
