"""HW1: the kNN pipeline, the quiz answers, the forest CSV checks and our own kNN vs scikit-learn."""
from __future__ import annotations

import json
import re
import urllib.error

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from core.data import DataError
from hw_knn.data import load_covtype, read_forest_csv
from hw_knn.experiments import QUIZ_CLASS_INDEX, quiz_answers, split
from hw_knn.knn import KNNClassifier, heap_push
from hw_knn.train import main


def sklearn_brute(X_train, y_train, **params) -> KNeighborsClassifier:
    return KNeighborsClassifier(algorithm="brute", **params).fit(X_train, y_train)


def covtype_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer data shaped like covtype: 10 wide-range columns, 4 one-hot wilderness areas,
    40 one-hot soil types, 7 classes; many exact distance ties among the 0/1 columns."""
    rng = np.random.default_rng(seed)
    continuous = rng.integers(0, 30, size=(n, 10)) * rng.integers(1, 4, size=10)
    area = np.eye(4)[rng.integers(0, 4, n)]
    soil = np.eye(40)[rng.integers(0, 40, n)]
    X = np.hstack([continuous, area, soil]).astype(np.float64)
    y = (continuous[:, 0] // 10 + area.argmax(1) + rng.integers(0, 2, n)) % 7 + 1
    return X, y


# ---------------------------------------------------------------- own kNN vs scikit-learn
@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_own_knn_equals_sklearn_brute_on_digits(metric, weights):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = split(X, y)
    for k in (1, 4, 10):
        ours = KNNClassifier(k, weights=weights, metric=metric, chunk_size=100).fit(X_train, y_train)
        ref = sklearn_brute(X_train, y_train, n_neighbors=k, weights=weights, metric=metric)
        np.testing.assert_array_equal(ours.predict(X_test), ref.predict(X_test))
        np.testing.assert_array_equal(ours.predict_proba(X_test), ref.predict_proba(X_test))
        dist, ind = ours.kneighbors(X_test)
        ref_dist, _ = ref.kneighbors(X_test)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-12)


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_own_knn_equals_sklearn_on_covtype_like_data_full_of_ties(metric, weights):
    X, y = covtype_like(4000, seed=0)
    X_train, X_test, y_train, y_test = split(X, y)  # 3200 / 800
    for k in (3, 8):
        ours = KNNClassifier(k, weights=weights, metric=metric).fit(X_train, y_train)
        ref = sklearn_brute(X_train, y_train, n_neighbors=k, weights=weights, metric=metric)
        np.testing.assert_array_equal(ours.predict(X_test), ref.predict(X_test))
        np.testing.assert_array_equal(ours.predict_proba(X_test), ref.predict_proba(X_test))


def test_tie_rules_differ_where_sklearn_heap_keeps_a_later_index():
    # distances to the query 0 are [1, 1, 2, 1, 0, 0, 2]; with k=3 one of the three points at
    # distance 1 is kept. scikit-learn's heap keeps row 1 (not row 0, the smallest index).
    X = np.array([[1.0], [1.0], [2.0], [1.0], [0.0], [0.0], [2.0]])
    y = np.array([1, 2, 1, 1, 1, 2, 1])
    query = np.array([[0.0]])
    ref = sklearn_brute(X, y, n_neighbors=3, metric="manhattan")
    replayed = KNNClassifier(3, metric="manhattan").fit(X, y)
    by_index = KNNClassifier(3, metric="manhattan", ties="index").fit(X, y)
    assert sorted(ref.kneighbors(query)[1][0]) == [1, 4, 5]
    assert sorted(replayed.kneighbors(query)[1][0]) == [1, 4, 5]
    assert sorted(by_index.kneighbors(query)[1][0]) == [0, 4, 5]
    assert ref.predict(query)[0] == replayed.predict(query)[0] == 2   # votes {1: 1, 2: 2}
    assert by_index.predict(query)[0] == 1                             # votes {1: 2, 2: 1}


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_equal_votes_go_to_the_smallest_class(weights):
    X = np.array([[-1.0, 0.0], [1.0, 0.0]])
    y = np.array([5, 3])
    query = np.array([[0.0, 0.0]])
    ours = KNNClassifier(2, weights=weights).fit(X, y)
    assert ours.predict(query)[0] == 3
    assert sklearn_brute(X, y, n_neighbors=2, weights=weights).predict(query)[0] == 3
    np.testing.assert_array_equal(ours.predict_proba(query), [[0.5, 0.5]])


@pytest.mark.parametrize("metric", ["euclidean", "manhattan"])
def test_zero_distance_neighbours_take_the_whole_distance_vote(metric):
    # the query sits on a class-2 point; two class-1 points are closer than everything else
    X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [3.0, 3.0]])
    y = np.array([2, 1, 1, 1])
    query = np.array([[0.0, 0.0], [0.05, 0.0]])
    ours = KNNClassifier(3, weights="distance", metric=metric).fit(X, y)
    ref = sklearn_brute(X, y, n_neighbors=3, weights="distance", metric=metric)
    np.testing.assert_array_equal(ours.predict_proba(query)[0], [0.0, 1.0])
    np.testing.assert_array_equal(ours.predict(query), [2, 1])
    np.testing.assert_array_equal(ours.predict(query), ref.predict(query))
    np.testing.assert_allclose(ours.predict_proba(query), ref.predict_proba(query), rtol=1e-12)


def test_heap_push_keeps_the_k_smallest_and_rejects_equal_to_root():
    values, indices = np.full(3, np.inf), np.full(3, -1)
    for i, v in enumerate([3.0, 1.0, 2.0, 3.0]):
        heap_push(values, indices, v, i)
    assert values[0] == 3.0 and indices[0] == 0  # row 3 equals the root: not pushed
    values, indices = np.full(3, np.inf), np.full(3, -1)
    for i, v in enumerate([5.0, 1.0, 4.0, 4.0, 2.0]):
        heap_push(values, indices, v, i)
    # row 3's 4.0 replaced the 5.0 at the root, so it is the one 2.0 evicts: row 2 stays
    assert sorted(values.tolist()) == [1.0, 2.0, 4.0]
    assert sorted(indices.tolist()) == [1, 2, 4]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="metric"):
        KNNClassifier(metric="cosine")
    with pytest.raises(ValueError, match="n_neighbors=5 but only 3"):
        KNNClassifier(5).fit(np.zeros((3, 2)), [0, 1, 0])
    with pytest.raises(RuntimeError, match="not fitted"):
        KNNClassifier().predict(np.zeros((1, 2)))


# ---------------------------------------------------------------- quiz answers
def test_quiz_answers_come_from_the_right_quantities():
    pred_prob = np.array([[0.1, 0.2, 0.30, 0.4],
                          [0.5, 0.1, 0.12, 0.28],
                          [0.2, 0.3, 0.10, 0.4]])
    params = {"metric": "manhattan", "n_neighbors": 4, "weights": "distance"}
    answers = quiz_answers(0.73654, params, pred_prob)
    assert QUIZ_CLASS_INDEX == 2
    assert answers.q5_pred_freq == round(pred_prob.mean(0)[2], 2) == 0.17  # not 0.36 (column 3), not 0.27 (column 0)
    assert answers.q1_accuracy == 0.7365
    assert (answers.q2_metric, answers.q3_n_neighbors, answers.q4_weights) == ("manhattan", 4, "distance")


# ---------------------------------------------------------------- the command
def test_pipeline_on_bundled_wine(tmp_path):
    metrics = main(["--dataset", "wine", "--n-jobs", "1", "--run-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert saved == pytest.approx(metrics)
    assert all(isinstance(v, (int, float)) for v in saved.values())
    # numbers of this pipeline on wine (scikit-learn 1.9), and each answer recomputed directly
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    X_train, X_test, y_train, y_test = split(X, y)
    q1 = (KNeighborsClassifier().fit(X_train, y_train).predict(X_test) == y_test).mean()
    assert saved["knn_default_test_accuracy"] == round(q1, 4) == 0.7222
    assert (answers["q2_metric"], answers["q3_n_neighbors"], answers["q4_weights"]) == ("manhattan", 1, "uniform")
    best = KNeighborsClassifier(n_neighbors=1, metric="manhattan").fit(X_train, y_train)
    assert saved["pred_freq_2"] == pytest.approx(best.predict_proba(X_test).mean(0)[2]) == pytest.approx(7 / 36)
    assert answers["q5_pred_freq"] == 0.19
    assert saved["logreg_liblinear_test_accuracy"] == pytest.approx(35 / 36)
    assert answers["logreg_saga_best_params"] == {"C": 1, "penalty": "l1"}
    assert saved["own_knn_agreement"] == 1.0
    assert (tmp_path / "plots" / "class_frequencies.png").stat().st_size > 0
    assert (tmp_path / "plots" / "knn_grid.png").stat().st_size > 0


def write_forest_csv(path, n: int = 300, seed: int = 1):
    X, y = covtype_like(n, seed)
    rows = [",".join(str(c) for c in range(55))]
    rows += [",".join(str(int(v)) for v in x) + f",{label}" for x, label in zip(X, y)]
    path.write_text("\n".join(rows) + "\n")
    return X, y


def test_forest_csv_found_in_data_dir_and_read_like_the_course(tmp_path, capsys):
    folder = tmp_path / "forest"
    folder.mkdir()
    X, y = write_forest_csv(folder / "forest_dataset.csv")
    metrics = main(["--data-dir", str(folder), "--n-jobs", "1", "--cv", "3", "--run-dir", str(tmp_path / "run")])
    assert f"{folder / 'forest_dataset.csv'}" in capsys.readouterr().out
    X_train, X_test, y_train, y_test = split(X, y)
    q1 = (KNeighborsClassifier().fit(X_train, y_train).predict(X_test) == y_test).mean()
    assert metrics["knn_default_test_accuracy"] == round(q1, 4)
    assert metrics["n_rows"] == 300 and metrics["n_features"] == 54


def test_builtin_default_is_announced(monkeypatch, capsys):
    from hw_knn.train import build_parser, load_table
    from core import cli

    monkeypatch.setenv("DLS_DATA", "/nonexistent-dls-data")
    table = load_table(cli.parse_args(build_parser(), []))
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["data: scikit-learn's bundled digits (1797 rows, 64 features) ($DLS_DATA has no 'forest' folder)"]
    assert table.X.shape == (1797, 64)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("text, message", [
    ("0,1,2\n1,abc,3\n2,5,1\n", "column '1' is not a finite number: 'abc' at data row 1"),
    ("0,1,2\n1,4,3\n2,1e400,1\n", "column '1' is not a finite number: '1e400' at data row 2"),
    ("0,1,2\n1,4,3\n2,5\n", "label column '2' is empty in 1 row(s), first at data row 2"),  # a short row
    ("0\n1\n2\n", "1 column(s) ('0'); expected features followed by a label column"),
    ("0,1,2\n1,2,3\n2,5,\n", "label column '2' is empty in 1 row(s), first at data row 2"),
    ("0,1,2\n1,2,3\n2,5,1.5\n", "label column '2' has a non-integer value 1.5 at data row 2"),
    ("0,1,2\n1,,3\n2,5,1\n", "column '1' has 1 empty value(s), first at data row 1"),
    ("", "cannot read as CSV"),
])
def test_bad_csv_names_file_and_column(tmp_path, text, message, cli_error):
    path = tmp_path / "forest_dataset.csv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_forest_csv(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert re.match("^error: .*forest_dataset.csv", cli_error(main, ["--data", str(path), "--run-dir", str(tmp_path / "run")]))
    assert not (tmp_path / "run").exists()


def test_missing_csv_is_an_error(tmp_path, cli_error):
    assert "nothere.csv: forest CSV not found" in cli_error(main, ["--data", str(tmp_path / "nothere.csv"),
                                                                    "--run-dir", str(tmp_path / "run")])


def test_covtype_offline_is_one_clear_sentence(monkeypatch):
    import sklearn.datasets

    def offline(**kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sklearn.datasets, "fetch_covtype", offline)
    with pytest.raises(DataError, match=r"^covtype: cannot download scikit-learn's fetch_covtype data \(no network\?\)"):
        load_covtype()


def test_covtype_sample_is_seeded(monkeypatch):
    import sklearn.datasets
    from sklearn.utils import Bunch

    full = Bunch(data=np.arange(500 * 54, dtype=float).reshape(500, 54), target=np.arange(500) % 7 + 1)
    monkeypatch.setattr(sklearn.datasets, "fetch_covtype", lambda **kwargs: full)
    a, b = load_covtype(100, seed=42), load_covtype(100, seed=42)
    np.testing.assert_array_equal(a.X, b.X)
    assert len(np.unique(a.X[:, 0])) == 100 and a.y.dtype == np.int64


@pytest.mark.parametrize("argv, message", [
    (["--cv", "1"], "argument --cv: expected an integer >= 2, got '1'"),
    (["--n-jobs", "0"], "argument --n-jobs: expected -1 (every core) or a number of processes >= 1, got '0'"),
    (["--covtype-rows", "0"], "argument --covtype-rows: expected an integer >= 1, got '0'"),
])
def test_bad_options_are_one_line_before_any_work(argv, message, runs_root, cli_error):
    assert cli_error(main, argv) == f"python -m hw_knn.train: error: {message}"
    assert not runs_root.exists()


@pytest.mark.parametrize("argv, flags", [
    (["--data", "a.csv", "--dataset", "covtype"], "--data and --dataset covtype"),
    (["--data-dir", "forest", "--dataset", "digits"], "--data-dir and --dataset digits"),
    (["--data", "a.csv", "--data-dir", "forest", "--dataset", "wine"], "--data and --data-dir and --dataset wine"),
])
def test_two_choices_of_data_are_one_line_before_any_work(argv, flags, runs_root, cli_error):
    assert cli_error(main, argv) == f"error: {flags}: each chooses the data; give only one of them"
    assert not runs_root.exists()


def test_unwritable_run_folder_stops_before_the_grid_searches(tmp_path, cli_error, capsys, monkeypatch):
    import hw_knn.train as knn_train

    def no_search(*args, **kwargs):
        raise AssertionError("the grid search ran before the run folder was made")

    monkeypatch.setattr(knn_train, "saga_grid", no_search)
    monkeypatch.setattr(knn_train, "knn_grid", no_search)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = cli_error(main, ["--dataset", "wine", "--run-dir", str(blocker / "run")])
    assert line.startswith(f"error: --run-dir {blocker / 'run'}: cannot create the run folder")


def test_more_folds_than_a_class_has_is_one_line(tmp_path, cli_error):
    path = tmp_path / "forest_dataset.csv"
    rows = ["a,b,class"] + [f"{i},{i % 3},{1 if i < 3 else 2}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    line = cli_error(main, ["--data", str(path), "--cv", "5", "--run-dir", str(tmp_path / "run")])
    assert line == "error: --cv 5: class 1 has only 3 row(s), fewer than the folds; use --cv 3 or less"
