"""How long does one fit of each churn model take, and what does CatBoost's Ordered boosting cost?

Fits, on all training rows of ``$DLS_DATA/churn`` (else the built-in sample), the logistic
regression with its C search (6 values x 5 inner folds + refit), CatBoost with the course's
parameters (500 trees, lr 0.03, Ordered boosting) and CatBoost as the search picks it on the
real data (350 plain trees, depth 4, lr 0.06), then predicts the test rows. Prints one JSON
line with the median seconds of ``--repeats`` runs and the ratio Ordered / plain CatBoost.

    python bench/churn.py [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from hw_churn.data import load_churn
from hw_churn.models import CATBOOST_COURSE, CatBoostModel, LogRegModel

SEARCHED = dict(depth=4, learning_rate=0.06, l2_leaf_reg=3, iterations=350)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    root = Path(os.environ["DLS_DATA"]) / "churn" if os.environ.get("DLS_DATA") else None
    data = load_churn(root if root is not None and root.is_dir() else None, verbose=False)
    X, y, test = data.X, data.y, data.test
    models = {
        "logreg_search": lambda: LogRegModel("log"),
        "catboost_course_ordered": lambda: CatBoostModel(CATBOOST_COURSE, threads=args.threads),
        "catboost_searched_plain": lambda: CatBoostModel(SEARCHED, threads=args.threads),
    }
    figures = {"data": data.source, "train_rows": len(y), "test_rows": len(test), "threads": args.threads}
    for name, make in models.items():
        fits, predicts = [], []
        for _ in range(args.repeats):
            model = make()
            fits.append(seconds(lambda: model.fit(X, y)))
            predicts.append(seconds(lambda: model.predict(test)))
        figures[f"{name}_fit_s"] = round(statistics.median(fits), 3)
        figures[f"{name}_predict_s"] = round(statistics.median(predicts), 4)
    figures["ordered_over_plain_fit"] = round(figures["catboost_course_ordered_fit_s"]
                                              / figures["catboost_searched_plain_fit_s"], 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
