"""HW2: gradient descent, the batch generator, elastic-net logistic regression vs scikit-learn."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from hw_logreg.compare import compare_with_sklearn
from hw_logreg.data import generate_batches, load_breast_cancer_data, load_mnist_01, make_course_blobs
from hw_logreg.descent import f, grad_descent_2d, grad_f
from hw_logreg.models import MyElasticLogisticRegression, sigmoid, sklearn_counterpart
from hw_logreg.train import main

COURSE_BLOB_WEIGHTS = [-0.43004999, 0.81077042, -0.00395889]


# ---------------------------------------------------------------- part 1
def test_f_and_its_analytic_gradient():
    assert f(np.array([np.pi / 2, 0.0])) == pytest.approx(1.0)
    assert f(np.array([np.pi / 4, np.pi / 4])) == pytest.approx(1.0)
    x = np.random.default_rng(0).uniform(-3, 3, size=(5, 2))
    eps = 1e-6
    for point in x:
        numeric = [(f(point + eps * e) - f(point - eps * e)) / (2 * eps) for e in np.eye(2)]
        np.testing.assert_allclose(grad_f(point), numeric, atol=1e-8)


def test_grad_descent_records_each_point_before_its_update():
    x0 = np.array([1.0, -0.5])
    steps = grad_descent_2d(f, grad_f, lr=0.1, num_iter=20, x0=x0)
    assert steps.shape == (20, 3)
    np.testing.assert_allclose(steps[0], [1.0, -0.5, np.sin(1.0) ** 2 + np.sin(-0.5) ** 2])
    np.testing.assert_allclose(steps[1, :2], x0 - 0.1 * np.sin(2 * x0))
    assert x0.tolist() == [1.0, -0.5]  # the start point is not modified
    assert np.all(np.diff(steps[:, 2]) < 0) and steps[-1, 2] < 0.01


def test_grad_descent_random_start_uses_the_global_generator():
    np.random.seed(42)
    steps = grad_descent_2d(f, grad_f, lr=0.1, num_iter=20)
    np.testing.assert_allclose(steps[0, :2], [0.37454012, 0.95071431], atol=1e-8)


# ---------------------------------------------------------------- part 2
def test_generate_batches_passes_the_notebook_asserts():
    X_fake = np.arange(100)[:, np.newaxis]
    y_fake = np.arange(100) + 1000
    X_copy, y_copy = X_fake.copy(), y_fake.copy()
    X_reconstructed, y_reconstructed = [], []
    for X_batch, y_batch in generate_batches(X_fake, y_fake, 10):
        X_reconstructed.append(X_batch)
        y_reconstructed.append(y_batch)
    X_reconstructed = np.concatenate(X_reconstructed)
    y_reconstructed = np.concatenate(y_reconstructed)
    assert (X_fake != X_reconstructed).all(), "every position changed (a derangement)"
    assert (y_fake != y_reconstructed).all()
    assert (np.sort(X_reconstructed, axis=0) == X_fake).all()
    assert (y_reconstructed - 1000 == X_reconstructed[:, 0]).all(), "rows stay paired"
    np.testing.assert_array_equal(X_fake, X_copy)  # the data itself is not shuffled
    np.testing.assert_array_equal(y_fake, y_copy)
    batches = list(generate_batches(X_fake, y_fake, 7))
    assert len(batches) == len(X_fake) // 7 == 14
    assert all(len(xb) == len(yb) == 7 for xb, yb in batches)


def test_generate_batches_seed_matches_the_course_and_leaves_global_rng_alone():
    np.random.seed(42)
    course_perm = np.random.permutation(100)
    np.random.seed(0)
    before = np.random.get_state()[1].copy()
    X = np.arange(100)[:, None]
    got = np.concatenate([xb[:, 0] for xb, _ in generate_batches(X, X[:, 0], 25)])
    np.testing.assert_array_equal(got, course_perm)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    first = np.concatenate([xb[:, 0] for xb, _ in generate_batches(X, X[:, 0], 25, seed=None)])
    second = np.concatenate([xb[:, 0] for xb, _ in generate_batches(X, X[:, 0], 25, seed=None)])
    assert not np.array_equal(first, second)


# ---------------------------------------------------------------- part 3
def test_blobs_weights_equal_the_course():
    X, y = make_course_blobs()
    model = MyElasticLogisticRegression(0.1, 0.1)
    losses = model.fit(X, y, epochs=1000)
    np.testing.assert_allclose(model.get_weights(), COURSE_BLOB_WEIGHTS, atol=1e-6)
    assert len(losses) == 1000 * 10  # one loss per batch, no epoch averaging
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert (model.predict(X) == y).mean() == pytest.approx(0.993)


def test_initial_weights_are_the_seeded_normal_draw():
    np.random.seed(42)
    expected = np.random.randn(3)
    model = MyElasticLogisticRegression(0.0, 0.0)
    model.fit(np.zeros((100, 2)), np.zeros(100), epochs=0)
    np.testing.assert_array_equal(model.get_weights(), expected)


def test_get_grad_equals_finite_differences_of_the_penalised_loss():
    rng = np.random.default_rng(3)
    X = np.hstack([np.ones((40, 1)), rng.normal(size=(40, 4))])
    y = (rng.random(40) < 0.5).astype(float)
    model = MyElasticLogisticRegression(0.3, 0.2)
    model.w = np.array([0.4, -0.7, 0.25, 1.1, -0.35])  # no weight near 0: sign() is differentiable
    analytic = model.get_grad(X, y, sigmoid(X @ model.w))
    eps = 1e-6
    numeric = np.array([(model.penalised_loss(X, y, model.w + eps * e) - model.penalised_loss(X, y, model.w - eps * e))
                        / (2 * eps) for e in np.eye(5)])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    # the bias is not regularised: its gradient is the data term alone
    assert analytic[0] == pytest.approx(np.mean(sigmoid(X @ model.w) - y))


def test_get_grad_by_hand():
    model = MyElasticLogisticRegression(0.5, 0.25)
    model.w = np.array([2.0, -1.0, 3.0])
    X = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    y = np.array([1.0, 0.0])
    p = np.array([0.5, 0.25])
    # data term: X^T (p - y) / 2 = [(-0.5 + 0.25), -0.5, 0.5] / 2
    expected = np.array([-0.125, -0.25, 0.25]) + 0.5 * np.array([0, -1, 1]) + 2 * 0.25 * np.array([0, -1.0, 3.0])
    np.testing.assert_allclose(model.get_grad(X, y, p), expected)


def test_loss_is_clipped_and_predict_uses_the_threshold():
    assert MyElasticLogisticRegression._loss(np.array([1.0]), np.array([0.0])) == pytest.approx(-np.log(1e-10))
    assert MyElasticLogisticRegression._loss(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == pytest.approx(np.log(2))
    model = MyElasticLogisticRegression(0.0, 0.0)
    model.w = np.array([0.0, 1.0])
    X = np.array([[-1.0], [0.0], [0.5]])
    np.testing.assert_allclose(model.predict_proba(X), sigmoid(np.array([-1.0, 0.0, 0.5])))
    np.testing.assert_array_equal(model.predict(X), [0, 1, 1])
    np.testing.assert_array_equal(model.predict(X, threshold=0.6), [0, 0, 1])


# ---------------------------------------------------------------- against scikit-learn
def test_sklearn_counterpart_finds_the_same_blob_weights():
    X, y = make_course_blobs()
    reference = sklearn_counterpart(0.1, 0.1, len(X), max_iter=1000, tol=1e-8).fit(X, y)
    assert reference.C == pytest.approx(1 / 300) and reference.l1_ratio == pytest.approx(1 / 3)
    sklearn_weights = np.r_[reference.intercept_, reference.coef_[0]]
    # SGD with a fixed step hovers around the optimum; the L1 weight sits at zero in scikit-learn
    np.testing.assert_allclose(sklearn_weights, COURSE_BLOB_WEIGHTS, atol=5e-3)
    assert sklearn_weights[2] == 0.0


def test_breast_cancer_accuracy_within_one_point_of_sklearn():
    X, y = load_breast_cancer_data()
    scores = compare_with_sklearn(X, y, 0.1, 0.1, cv=5, epochs=10)
    assert scores["ours_accuracy"] == pytest.approx(scores["sklearn_accuracy"], abs=0.01)
    assert scores["ours_accuracy"] > 0.9


@pytest.mark.realdata
def test_mnist_zero_vs_one_within_one_point_of_sklearn(dls_data):
    from tests.conftest import real_dataset

    X, y = load_mnist_01(real_dataset(dls_data, "mnist"))
    assert X.shape == (2115, 784) and np.bincount(y).tolist() == [980, 1135]
    assert X.max() == 255.0
    scores = compare_with_sklearn(X, y, 0.1, 0.1, cv=3, epochs=5)
    assert scores["ours_accuracy"] == pytest.approx(scores["sklearn_accuracy"], abs=0.01)
    assert scores["ours_accuracy"] >= 0.99  # the course: 0.9967 with cv=3 on Kaggle's train set


# ---------------------------------------------------------------- MNIST 0-vs-1 (the IDX reader: test_core_mnist.py)
def test_mnist_loader_keeps_zeros_and_ones(tmp_path):
    from tests.test_core_mnist import write_idx

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = np.array([0, 7, 1, 1, 3, 0])
    write_idx(raw / "t10k-images-idx3-ubyte.gz", np.arange(6)[:, None, None] * np.ones((6, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels)
    X, y = load_mnist_01(tmp_path)
    assert X.shape == (4, 784) and y.tolist() == [0, 1, 1, 0]
    assert X[:, 0].tolist() == [0.0, 2.0, 3.0, 5.0]


# ---------------------------------------------------------------- the command
def test_command_without_mnist(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DLS_DATA", raising=False)
    metrics = main(["--run-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "data: blobs and breast cancer only (no MNIST) (no --data-dir, DLS_DATA unset)" in out
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == pytest.approx(metrics)
    np.testing.assert_allclose([saved["blobs_w0"], saved["blobs_w1"], saved["blobs_w2"]], COURSE_BLOB_WEIGHTS, atol=1e-6)
    assert saved["blobs_accuracy"] == pytest.approx(0.993)
    assert saved["descent_f_start"] == pytest.approx(f(np.array([0.37454012, 0.95071431])))
    assert saved["descent_f_end"] < 1e-3
    assert "mnist01_ours_accuracy" not in saved
    assert abs(saved["breast_cancer_ours_accuracy"] - saved["breast_cancer_sklearn_accuracy"]) <= 0.01
    for name in ("descent.png", "blobs_loss.png", "blobs_boundary.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 0


def test_command_with_a_broken_mnist_folder(tmp_path, cli_error):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    line = cli_error(main, ["--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "run")])
    assert re.match("error: .*t10k-images-idx3-ubyte.gz: MNIST IDX file not found", line)


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-1"], "argument --lr: expected a number > 0, got '-1'"),
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1, got '0'"),
    (["--blob-epochs", "0"], "argument --blob-epochs: expected an integer >= 1, got '0'"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got '0'"),
    (["--cv", "1"], "argument --cv: expected an integer >= 2, got '1'"),
    (["--l1", "-0.1"], "argument --l1: expected a number >= 0, got '-0.1'"),
])
def test_bad_options_are_one_line_before_any_work(argv, message, runs_root, cli_error):
    line = cli_error(main, argv)
    assert line == f"python -m hw_logreg.train: error: {message}"
    assert not runs_root.exists()
