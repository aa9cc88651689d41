"""HW1: logistic regression and k-nearest neighbours on forest cover types, with the quiz answers.

    python -m hw_knn.train                                # bundled digits (no network needed)
    python -m hw_knn.train --data forest_dataset.csv      # the course's file: Q1..Q5 as in the course
    python -m hw_knn.train --dataset covtype              # a 10000-row sample of scikit-learn's covtype

Steps, as in the notebook: 80/20 split (random_state=42); liblinear logistic regression;
saga grid over C 1..4 x l1/l2 (cv=5, whole data); default kNN on the test split (Q1); kNN grid
over k 1..10 x uniform/distance x manhattan/euclidean (cv=5, whole data; Q2-Q4); the best model
refitted on train, its mean predicted class probabilities on test vs the real class shares (Q5,
bar chart). The same best model is also run with this package's own kNN (hw_knn.knn) and the
agreement with scikit-learn is reported.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from core import cli, runs
from core.data import require_file, resolve_data_root
from core.errors import UserError
from core.plots import bar_compare

from .data import BUILTIN, FOREST_FILE, Table, class_frequencies, load_builtin, load_covtype, read_forest_csv
from .experiments import (QUIZ_CLASS_INDEX, default_knn_accuracy, knn_grid, liblinear_demo, quiz_answers,
                          saga_grid, split)
from .knn import KNNClassifier
from .plots import grid_curves


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_knn.train", __doc__.split("\n")[0])
    cli.add_data_args(parser, "forest", loader=False)
    group = parser.add_argument_group("knn")
    group.add_argument("--data", type=str, default=None,
                       help=f"path to the course's {FOREST_FILE} (not with --data-dir or a --dataset)")
    group.add_argument("--dataset", choices=["auto", "covtype", *BUILTIN], default="auto",
                       help=f"auto: --data, else {FOREST_FILE} in --data-dir / $DLS_DATA/forest, else digits; "
                            "covtype (downloaded by scikit-learn), digits, wine: that data set instead (not with "
                            "--data or --data-dir)")
    group.add_argument("--covtype-rows", type=cli.positive_int, default=10000, help="rows sampled from covtype")
    group.add_argument("--seed", type=int, default=42, help="seed of the covtype sample")
    group.add_argument("--cv", type=cli.int_at_least(2), default=5, help="cross-validation folds of both grid searches")
    group.add_argument("--n-jobs", type=cli.n_jobs, default=-1, help="grid-search processes (-1: all cores)")
    cli.add_run_args(parser)
    return parser


def check_data_options(args: argparse.Namespace) -> None:
    """``--data``, ``--data-dir`` and a ``--dataset`` other than auto each choose the data:
    at most one of them may be given.

    Raises:
        UserError: two or more of them, named.
    """
    given = [flag for flag, on in (("--data", args.data), ("--data-dir", args.data_dir),
                                   (f"--dataset {args.dataset}", args.dataset != "auto")) if on]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)}: each chooses the data; give only one of them")


def load_table(args: argparse.Namespace) -> Table:
    """The data the run uses (see --dataset); prints one line saying which."""
    if args.data:
        table = read_forest_csv(args.data)
    elif args.dataset == "covtype":
        table = load_covtype(args.covtype_rows, args.seed)
    elif args.dataset in BUILTIN:
        table = load_builtin(args.dataset)
    else:
        source = resolve_data_root("forest", args.data_dir, builtin="scikit-learn's bundled digits",
                                   announce=False)
        if source.builtin:
            table = load_builtin("digits")
            table.description += source.description.removeprefix("data: scikit-learn's bundled digits")
        else:
            table = read_forest_csv(require_file(source.root / FOREST_FILE, f"{FOREST_FILE} in {source.origin} folder"))
    print(f"data: {table.description}", flush=True)
    return table


def stage(message: str) -> float:
    print(f"== {message}", flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    check_data_options(args)
    try:
        table = load_table(args)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    X, y = table.X, table.y
    cli.check_folds(args.cv, y, "--cv")
    run = runs.RunDir.create("hw_knn", args)  # before the grid searches: an unwritable folder stops us now
    X_train, X_test, y_train, y_test = split(X, y)
    print(f"split: {len(X_train)} train / {len(X_test)} test, classes {np.unique(y).tolist()}")
    metrics: dict = {"n_rows": len(X), "n_features": X.shape[1]}

    stage("logistic regression, liblinear, C=1")
    metrics["logreg_liblinear_test_accuracy"] = liblinear_demo(X_train, y_train, X_test, y_test)
    print(f"test accuracy {metrics['logreg_liblinear_test_accuracy']:.4f}")

    start = stage(f"logistic regression, saga grid C 1..4 x l1/l2, cv={args.cv}, whole data")
    saga_params, metrics["logreg_saga_best_accuracy_whole_data"] = saga_grid(X, y, args.cv, args.n_jobs)
    metrics["logreg_saga_best_C"] = saga_params["C"]
    print(f"best {saga_params}, accuracy on the whole data {metrics['logreg_saga_best_accuracy_whole_data']:.4f} "
          f"({time.perf_counter() - start:.1f} s)")

    stage("kNN with defaults (Q1)")
    default_accuracy = default_knn_accuracy(X_train, y_train, X_test, y_test)
    print(f"test accuracy {default_accuracy:.4f}")

    start = stage(f"kNN grid k 1..10 x uniform/distance x manhattan/euclidean, cv={args.cv}, whole data")
    grid = knn_grid(X, y, args.cv, args.n_jobs)
    print(f"best {grid.best_params_}, cv accuracy {grid.best_score_:.4f} ({time.perf_counter() - start:.1f} s)")

    stage("best kNN refitted on train: predicted vs real class frequencies on test")
    optimal_clf = grid.best_estimator_.fit(X_train, y_train)
    pred_prob = optimal_clf.predict_proba(X_test)
    pred_freq = pred_prob.mean(axis=0)
    real_freq = class_frequencies(y_test, optimal_clf.classes_)
    answers = quiz_answers(default_accuracy, grid.best_params_, pred_prob)
    own = KNNClassifier(**grid.best_params_).fit(X_train, y_train)
    own_agreement = float((own.predict(X_test) == optimal_clf.predict(X_test)).mean())
    print(f"own kNN (hw_knn.knn) agrees with scikit-learn on {own_agreement:.2%} of the test rows")

    metrics.update({
        "knn_default_test_accuracy": answers.q1_accuracy,
        "knn_best_n_neighbors": answers.q3_n_neighbors,
        "knn_best_cv_accuracy": float(grid.best_score_),
        "knn_best_test_accuracy": float((optimal_clf.predict(X_test) == y_test).mean()),
        "own_knn_agreement": own_agreement,
        f"pred_freq_{QUIZ_CLASS_INDEX}": float(pred_freq[QUIZ_CLASS_INDEX]),
        "q5_pred_freq_rounded": answers.q5_pred_freq,
    })
    run.save_metrics(metrics)
    run.save_json("answers.json", {**vars(answers), "logreg_saga_best_params": saga_params,
                                   "knn_best_params": dict(grid.best_params_),
                                   "classes": optimal_clf.classes_.tolist(),
                                   "pred_freq": pred_freq.tolist(), "real_freq": real_freq.tolist()})
    labels = [str(c) for c in optimal_clf.classes_]
    bar_compare(labels, {"predicted (mean predict_proba)": pred_freq, "real (test split)": real_freq},
                run.plots / "class_frequencies.png", title="best kNN on the test split", ylabel="frequency",
                ylim=(0, 0.54) if max(pred_freq.max(), real_freq.max()) < 0.54 else None)
    grid_curves(grid.cv_results_, run.plots / "knn_grid.png")
    print("\n".join(answers.lines()))
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
