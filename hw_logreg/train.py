"""HW2: gradient descent on sin^2, then elastic-net logistic regression on blobs, breast cancer and MNIST.

    python -m hw_logreg.train                       # MNIST 0-vs-1 too when $DLS_DATA/mnist exists
    python -m hw_logreg.train --data-dir PATH       # PATH holds MNIST/raw/t10k-{images-idx3,labels-idx1}-ubyte[.gz]

Part 1 draws the descent path of ``grad_descent_2d(f, grad_f, lr=0.1, num_iter=20)`` on the
surface of f, from a start drawn after ``np.random.seed(--seed)``. Part 3 fits
MyElasticLogisticRegression(--l1, --l2) on the course's blobs for --blob-epochs epochs (with
the defaults 0.1, 0.1 and 1000 its weights are the course's) and draws its loss per batch and
its decision boundary; then compares it with scikit-learn's saga elastic net (same penalties)
by cross-validated accuracy on breast cancer and, when MNIST is found, on its 0/1 test digits.
"""
from __future__ import annotations

import argparse

import numpy as np

from core import cli, runs
from core.data import resolve_data_root

from .compare import compare_with_sklearn
from .data import load_breast_cancer_data, load_mnist_01, make_course_blobs
from .descent import f, grad_descent_2d, grad_f
from .models import MyElasticLogisticRegression, sklearn_counterpart
from .plots import batch_losses, decision_boundary, descent_path


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_logreg.train", __doc__.split("\n")[0])
    parser.epilog = ("Without MNIST (no --data-dir and no $DLS_DATA/mnist) the comparison runs on breast "
                     "cancer only; the blobs and breast cancer come with scikit-learn.")
    cli.add_data_args(parser, "mnist", loader=False)
    group = parser.add_argument_group("logistic regression")
    group.add_argument("--l1", type=cli.nonneg_float, default=0.1, help="L1 coefficient")
    group.add_argument("--l2", type=cli.nonneg_float, default=0.1, help="L2 coefficient")
    group.add_argument("--blob-epochs", type=cli.positive_int, default=1000, help="epochs on the blobs")
    group.add_argument("--epochs", type=cli.positive_int, default=10, help="epochs in the breast-cancer/MNIST comparison")
    group.add_argument("--lr", type=cli.positive_float, default=0.1, help="learning rate (blobs and comparison)")
    group.add_argument("--batch-size", type=cli.positive_int, default=100, help="batch size (blobs and comparison)")
    group.add_argument("--cv", type=cli.int_at_least(2), default=3, help="cross-validation folds of the comparison")
    group.add_argument("--seed", type=int, default=42,
                       help="seed of NumPy's global generator, set once at the start: it draws the descent's "
                            "random start, then scikit-learn's saga shuffles with it")
    cli.add_run_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    mnist = resolve_data_root("mnist", args.data_dir, builtin="blobs and breast cancer only (no MNIST)")
    mnist_data = None if mnist.builtin else load_mnist_01(mnist.root)
    if mnist_data is not None:
        cli.check_folds(args.cv, mnist_data[1], "--cv")
    run = runs.RunDir.create("hw_logreg", args)
    metrics: dict = {}

    print("== part 1: gradient descent on sin(x1)^2 + sin(x2)^2, lr=0.1, 20 steps")
    np.random.seed(args.seed)
    steps = grad_descent_2d(f, grad_f, lr=0.1, num_iter=20)
    metrics.update({"descent_f_start": float(steps[0, 2]), "descent_f_end": float(steps[-1, 2])})
    print(f"f from {steps[0, 2]:.4f} at {np.round(steps[0, :2], 4)} to {steps[-1, 2]:.6f} at {np.round(steps[-1, :2], 4)}")
    descent_path(f, steps, run.plots / "descent.png")

    print(f"== part 3: MyElasticLogisticRegression({args.l1}, {args.l2}) on blobs, {args.blob_epochs} epochs")
    X, y = make_course_blobs()
    model = MyElasticLogisticRegression(args.l1, args.l2)
    losses = model.fit(X, y, epochs=args.blob_epochs, lr=args.lr, batch_size=args.batch_size)
    weights = model.get_weights()
    reference = sklearn_counterpart(args.l1, args.l2, len(X), max_iter=1000).fit(X, y)
    metrics.update({f"blobs_w{i}": float(w) for i, w in enumerate(weights)})
    metrics["blobs_accuracy"] = float((model.predict(X) == y).mean())
    metrics["blobs_sklearn_accuracy"] = float(reference.score(X, y))
    print(f"weights {np.array2string(weights, precision=8)}; scikit-learn's counterpart "
          f"{np.array2string(np.r_[reference.intercept_, reference.coef_[0]], precision=8)}")
    print(f"accuracy on the blobs: ours {metrics['blobs_accuracy']:.4f}, scikit-learn {metrics['blobs_sklearn_accuracy']:.4f}")
    batch_losses(losses, run.plots / "blobs_loss.png")
    decision_boundary(model, X, y, run.plots / "blobs_boundary.png", title=f"l1={args.l1}, l2={args.l2}")

    datasets = {"breast_cancer": load_breast_cancer_data()}
    if mnist_data is not None:
        datasets["mnist01"] = mnist_data
    for name, (X, y) in datasets.items():
        print(f"== {name} ({len(X)} rows, {X.shape[1]} features): StandardScaler + ours vs scikit-learn saga, cv={args.cv}")
        scores = compare_with_sklearn(X, y, args.l1, args.l2, cv=args.cv, epochs=args.epochs, lr=args.lr,
                                      batch_size=args.batch_size)
        print(f"accuracy ours {scores['ours_accuracy']:.4f} ({scores['ours_seconds']:.1f} s), "
              f"scikit-learn {scores['sklearn_accuracy']:.4f} ({scores['sklearn_seconds']:.1f} s)")
        metrics.update({f"{name}_{key}": value for key, value in scores.items() if key.endswith("accuracy")})
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
