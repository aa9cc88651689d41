"""hw_churn: cleaning, bad input, folds, blend, unseen categories, train + submit end to end, the
model files (load_model gives back the trained model; unreadable files are refused in one line)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import hw_churn
from core.data import DataError
from core.errors import UserError
from core.metrics import roc_auc
from core.runs import LoadedModel, load_model as load_any_run
from hw_churn import submit, train
from hw_churn.data import (CAT_COLS, FEATURE_COLS, NUM_COLS, add_features, clean_table, load_churn, make_sample,
                           read_table)
from hw_churn.models import (BlendModel, CatBoostModel, CVResult, LogRegModel, best_blend_weight,
                             cross_validate_blend, linear_features, load_model, save_model, stratified_folds)
from tests.conftest import real_dataset


def write_csv(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def sample():
    train_raw, test_raw = make_sample(n_train=600, n_test=200, seed=3)
    train_df, _ = clean_table(train_raw, "train", verbose=False)
    test_df, _ = clean_table(test_raw, "test", verbose=False)
    return train_df, test_df


def test_course_warm_up_roc_auc():
    assert round(roc_auc([0, 1, 1, 0, 1], [0.1, 0.9, 0.4, 0.6, 0.61]), 4) == 0.8333


# -- cleaning ----------------------------------------------------------------------------------

def test_blank_total_spent_becomes_zero_with_its_count_and_dtypes_are_fixed(capsys):
    raw = make_sample(n_train=6, n_test=1, seed=0)[0]
    raw["ClientPeriod"] = ["0", "0", "5", "12", "0", "3"]
    raw["TotalSpent"] = [" ", "", "100.5", "  ", " ", "20"]  # row 3 is blank with ClientPeriod 12
    raw["IsSeniorCitizen"] = ["0", "1", "0", "0", "1", "0"]
    clean, report = clean_table(raw, "train.csv")
    assert report["total_spent_blank"] == 4
    assert report["total_spent_blank_nonzero_period"] == 1
    assert report["blank_cells"]["TotalSpent"] == 4
    assert clean["TotalSpent"].tolist() == [0.0, 0.0, 100.5, 0.0, 0.0, 20.0]
    assert clean["ClientPeriod"].dtype == np.float64 and clean["TotalSpent"].dtype == np.float64
    assert clean["IsSeniorCitizen"].tolist() == ["0", "1", "0", "0", "1", "0"]  # a category, as text
    assert clean["Churn"].dtype.kind == "i"
    assert report["nan"] == {}
    assert "TotalSpent blank in 4 rows -> set to 0, 1 of them with ClientPeriod > 0" in capsys.readouterr().out


def test_duplicates_are_counted_and_kept():
    raw = make_sample(n_train=10, n_test=1, seed=0)[0]
    raw = pd.concat([raw, raw.iloc[[2, 2, 5]]], ignore_index=True)
    clean, report = clean_table(raw, "train.csv", verbose=False)
    assert report["duplicates"] == 3 and len(clean) == 13


def test_builtin_sample_schema_and_signal():
    train_raw, test_raw = make_sample()
    assert list(train_raw.columns) == FEATURE_COLS + ["Churn"] and list(test_raw.columns) == FEATURE_COLS
    assert (len(train_raw), len(test_raw)) == (1200, 400)
    blank = train_raw["TotalSpent"].str.strip() == ""
    assert blank.sum() > 0 and (blank == (train_raw["ClientPeriod"] == "0")).all()
    clean, _ = clean_table(train_raw, "train", verbose=False)
    rate = clean.groupby("HasContractPhone")["Churn"].mean()
    assert rate["Month-to-month"] > 2 * rate["Two year"]
    assert make_sample()[0].equals(train_raw)  # fixed seed


# -- bad input -----------------------------------------------------------------------------------

def test_missing_column_is_named(tmp_path):
    path = write_csv(make_sample(20, 5)[0].drop(columns="PaymentMethod"), tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['PaymentMethod'\]"):
        read_table(path, with_target=True)


def test_extra_column_is_named(tmp_path):
    test_raw = make_sample(20, 5)[1]
    test_raw["Id"] = range(len(test_raw))
    path = write_csv(test_raw, tmp_path / "test.csv")
    with pytest.raises(DataError, match=r"test\.csv: unexpected column\(s\) \['Id'\]"):
        read_table(path, with_target=False)


def test_target_column_in_test_is_an_extra_column(tmp_path):
    path = write_csv(make_sample(20, 5)[0], tmp_path / "test.csv")
    with pytest.raises(DataError, match=r"unexpected column\(s\) \['Churn'\]"):
        read_table(path, with_target=False)


@pytest.mark.parametrize("column, value", [("MonthlySpending", "abc"), ("TotalSpent", "12,5"),
                                           ("ClientPeriod", ""), ("MonthlySpending", "inf"),
                                           ("TotalSpent", "1e400"), ("ClientPeriod", "-Infinity")])
def test_non_numeric_value_names_file_column_and_row(tmp_path, column, value):
    raw = make_sample(20, 5)[0]
    raw.loc[7, column] = value
    path = write_csv(raw, tmp_path / "train.csv")
    table = read_table(path, with_target=True)
    with pytest.raises(DataError) as info:
        clean_table(table, path)
    message = str(info.value)
    assert path in message and f"column '{column}'" in message and "row 7 (line 9)" in message
    assert repr(value) in message


def test_short_row_is_refused_not_padded(tmp_path):
    raw = make_sample(20, 5)[1]
    path = tmp_path / "test.csv"
    lines = raw.to_csv(index=False).splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0]  # row 3 loses its last field (PaymentMethod)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"test\.csv: line 5 has 18 fields, expected 19 \(as many as the header\)"):
        read_table(path, with_target=False)


def test_bad_target_value_is_named(tmp_path):
    raw = make_sample(20, 5)[0]
    raw.loc[3, "Churn"] = "2"
    with pytest.raises(DataError, match=r"column 'Churn' row 3 \(line 5\) has '2', expected 0 or 1"):
        clean_table(raw, "train.csv")


def test_train_cli_turns_bad_data_into_one_error_line(tmp_path, runs_root, cli_error):
    train_raw, test_raw = make_sample(50, 10)
    write_csv(train_raw.drop(columns="Sex"), tmp_path / "train.csv")
    write_csv(test_raw, tmp_path / "test.csv")
    line = cli_error(train.main, ["--data-dir", str(tmp_path), "--quick"])
    assert re.match(r"^error: .*train\.csv: missing column\(s\) \['Sex'\]", line)
    assert not runs_root.exists()  # stopped before the run folder


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "argument --threads: expected an integer >= 1, got '0'"),
    (["--folds", "1"], "argument --folds: expected an integer >= 2, got '1'"),
    (["--model", "forest"], "argument --model: invalid choice: 'forest'"),
])
def test_bad_options_are_one_line_before_any_work(argv, message, runs_root, cli_error, capsys):
    assert message in cli_error(train.main, argv)
    assert not runs_root.exists()


def test_more_folds_than_rows_of_a_class_is_one_line(tmp_path, runs_root, cli_error):
    train_raw, test_raw = make_sample(60, 10)
    train_raw["Churn"] = ["1"] * 3 + ["0"] * 57
    write_csv(train_raw, tmp_path / "train.csv")
    write_csv(test_raw, tmp_path / "test.csv")
    line = cli_error(train.main, ["--data-dir", str(tmp_path), "--folds", "5"])
    assert line == "error: --folds 5: class 1 has only 3 row(s), fewer than the folds; use --folds 3 or less"
    assert not runs_root.exists()


def test_config_value_outside_the_choices_is_one_line(tmp_path, runs_root, cli_error):
    config = tmp_path / "churn.yaml"
    config.write_text("model: forest\n")
    line = cli_error(train.main, ["--config", str(config)])
    assert "model (argument --model): invalid choice: 'forest'" in line and not runs_root.exists()


# -- features ----------------------------------------------------------------------------------

def test_engineered_features_by_hand():
    X = pd.DataFrame([[0, 50.0, 0.0], [10, 80.0, 600.0]], columns=NUM_COLS)
    for column in CAT_COLS:
        X[column] = "No"
    X.loc[1, ["HasOnlineBackup", "HasOnlineTV", "HasMultiplePhoneNumbers"]] = "Yes"
    out = add_features(X)
    assert out["AvgMonthlySpent"].tolist() == [50.0, 60.0]   # period 0: the monthly bill
    assert out["SpendingChange"].tolist() == [0.0, 20.0]
    assert out["NumServices"].tolist() == [0.0, 3.0]
    assert out["TenureBucket"].tolist() == ["0-1y", "0-1y"]
    table, num, cat = linear_features(X, "log")
    assert np.allclose(table["LogTotalSpent"], [0.0, np.log(601.0)])
    assert num == NUM_COLS + ["LogClientPeriod", "LogTotalSpent"] and cat == CAT_COLS


# -- CV, blend ---------------------------------------------------------------------------------

def test_folds_are_stratified_disjoint_and_cover_every_row():
    y = np.array([0] * 370 + [1] * 130)
    folds = stratified_folds(y, 5, seed=1)
    held_out = np.concatenate([val for _, val in folds])
    assert len(folds) == 5
    assert np.array_equal(np.sort(held_out), np.arange(len(y)))  # every row once
    for train_idx, val_idx in folds:
        assert len(np.intersect1d(train_idx, val_idx)) == 0
        assert len(train_idx) + len(val_idx) == len(y)
        assert y[val_idx].sum() == 26 and len(val_idx) == 100  # the 26 % of positives in each fold
    assert [v.tolist() for _, v in stratified_folds(y, 5, seed=1)] == [v.tolist() for _, v in folds]


def test_blend_weight_is_chosen_on_the_other_folds():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.5, 400)        # informative
    noise = rng.normal(0, 1, 400)             # useless
    assert best_blend_weight(good, noise, y) == 1.0
    assert best_blend_weight(noise, good, y) == 0.0
    folds = stratified_folds(y, 4, seed=0)
    first = CVResult("a", [0.0] * 4, good)
    second = CVResult("b", [0.0] * 4, noise)
    result = cross_validate_blend(first, second, y, folds, log=lambda _: None)
    assert result.details == ["weight=1.0"] * 4
    assert np.allclose(result.oof, good)
    assert result.fold_auc == pytest.approx([roc_auc(y[v], good[v]) for _, v in folds])


# -- unseen categories -------------------------------------------------------------------------

def with_unseen_categories(test_df: pd.DataFrame) -> pd.DataFrame:
    out = test_df.copy()
    out.loc[:4, "PaymentMethod"] = "Cryptocurrency"
    out.loc[:2, "HasInternetService"] = "Satellite"
    return out


def test_logreg_ignores_categories_unseen_in_training(sample):
    train_df, test_df = sample
    model = LogRegModel("log", Cs=[1.0], inner_folds=3).fit(train_df[FEATURE_COLS], train_df["Churn"].to_numpy())
    unseen = with_unseen_categories(test_df)
    p = model.predict(unseen[FEATURE_COLS])
    assert p.shape == (len(test_df),) and np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    # an unseen value contributes nothing: the one-hot block of PaymentMethod is all zero
    encoded = model.pipeline_[:-1].transform(linear_features(unseen[FEATURE_COLS])[0])
    names = model.pipeline_[:-1].get_feature_names_out()
    payment = [i for i, n in enumerate(names) if n.startswith("onehot__PaymentMethod_")]
    assert len(payment) == 4
    dense = encoded.toarray() if hasattr(encoded, "toarray") else encoded
    assert (dense[:5, payment] == 0).all() and (dense[5:, payment].sum(axis=1) == 1).all()
    # rows whose categories were all seen keep their prediction
    assert np.allclose(p[5:], model.predict(test_df[FEATURE_COLS])[5:])


def test_catboost_handles_unseen_categories_and_writes_no_files(sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_df, test_df = sample
    model = CatBoostModel(dict(iterations=60, depth=4, learning_rate=0.1), seed=1)
    model.fit(train_df[FEATURE_COLS], train_df["Churn"].to_numpy())
    p = model.predict(with_unseen_categories(test_df)[FEATURE_COLS])
    assert p.shape == (len(test_df),) and np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    assert not (tmp_path / "catboost_info").exists()
    blend = BlendModel(LogRegModel("log", Cs=[1.0], inner_folds=3), model, weight=0.3)
    blend.first.fit(train_df[FEATURE_COLS], train_df["Churn"].to_numpy())
    expected = 0.3 * blend.first.predict(test_df[FEATURE_COLS]) + 0.7 * p
    assert np.allclose(blend.predict(with_unseen_categories(test_df)[FEATURE_COLS])[5:], expected[5:])


# -- end to end --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def blend_run(tmp_path_factory):
    """One ``train --quick --model blend`` on the built-in sample: (run folder, what main returned)."""
    work = tmp_path_factory.mktemp("churn")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DLS_DATA", raising=False)
        patch.setenv("DLS_RUNS", str(work / "runs"))
        patch.chdir(work)
        run_dir = work / "run"
        out = train.main(["--quick", "--seed", "0", "--model", "blend", "--folds", "3", "--run-dir", str(run_dir)])
    assert not (work / "catboost_info").exists() and not (work / "runs").exists()
    return run_dir, out


def test_train_and_submit_on_the_builtin_sample(blend_run, monkeypatch):
    monkeypatch.delenv("DLS_DATA", raising=False)
    run_dir, out = blend_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert out["best"] == "blend"
    assert metrics["best_cv_auc"] == pytest.approx(metrics["cv_auc_blend"])
    assert metrics["cv_auc_logreg_log"] > 0.75 and metrics["cv_auc_catboost_searched"] > 0.75  # they learn
    assert metrics["train_rows"] == 1200 and metrics["total_spent_blank_train"] == 40
    assert 0.0 <= metrics["blend_weight"] <= 1.0
    table = pd.read_csv(run_dir / "cv_results.csv")
    assert table["step"].tolist() == ["logreg_raw", "logreg_log", "catboost_searched", "blend"]
    assert table["gain_vs_logreg_raw"].iloc[0] == 0.0
    for name in ("numeric_by_target", "categorical_counts", "target_balance"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 10_000
    assert "Random rows" in (run_dir / "data_report.md").read_text()

    path = submit.main(["--run", str(run_dir)])
    submission = pd.read_csv(path)
    assert path == run_dir / "submission.csv"
    assert list(submission.columns) == ["Id", "Churn"] and submission["Id"].tolist() == list(range(400))
    assert submission["Churn"].between(0, 1).all() and submission["Churn"].std() > 0.05
    # the loaded model scores the built-in test rows exactly as the model train fitted
    test_rows = load_churn(None, verbose=False).test[FEATURE_COLS]
    np.testing.assert_allclose(submission["Churn"], out["model"].predict(test_rows), rtol=1e-12, atol=1e-12)


def test_the_trained_model_comes_back_from_its_run(blend_run, sample):
    """hw_churn.load_model (and core.runs.load_model) give the very model train fitted: same
    predictions on the same rows, its CV score, settings and metrics."""
    run_dir, out = blend_run
    loaded = hw_churn.load_model(run_dir)
    assert isinstance(loaded, LoadedModel) and (loaded.homework, loaded.kind) == ("hw_churn", "tabular")
    assert isinstance(loaded.model, BlendModel) and isinstance(loaded.model.second, CatBoostModel)
    assert loaded.model.first.pipeline_ is None  # the logistic regression is rebuilt from numbers alone
    assert loaded.model.weight == out["model"].weight == out["metrics"]["blend_weight"]
    assert loaded.extras["name"] == "blend" and loaded.extras["feature_cols"] == FEATURE_COLS
    assert loaded.extras["cv_auc"] == out["metrics"]["best_cv_auc"] == loaded.metrics["best_cv_auc"]
    assert loaded.settings["seed"] == 0 and loaded.settings["homework"] == "hw_churn"
    assert loaded.config["kind"] == "blend" and loaded.config["first"]["C"] == out["metrics"]["logreg_C"]
    rows = with_unseen_categories(sample[1])[FEATURE_COLS]
    expected = out["model"].predict(rows)
    assert expected.std() > 0.05  # rows the model tells apart
    np.testing.assert_allclose(loaded.model.predict(rows), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(loaded.model.second.predict(rows), out["model"].second.predict(rows))
    again = load_any_run(run_dir)  # core.runs.load_model finds hw_churn from args.json
    np.testing.assert_array_equal(again.model.predict(rows), loaded.model.predict(rows))


def test_a_run_without_its_model_files_is_refused_in_one_line(tmp_path, cli_error):
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"model": "all", "homework": "hw_churn"}))
    (run / "model.joblib").write_bytes(b"not read")
    with pytest.raises(UserError) as info:
        load_model(run)
    assert str(info.value) == (f"{run}: no model.json, so no trained model (the run stopped before its end, or was "
                               f"written by an older version of this project); train it again (its options are "
                               f"in {run / 'args.json'}: pass that file as --config)")
    line = cli_error(submit.main, ["--run", str(run)])
    assert line == f"error: {info.value}"
    assert sorted(p.name for p in run.iterdir()) == ["args.json", "model.joblib"]  # nothing written


def test_submit_on_a_folder_that_is_not_a_churn_run_is_one_line(tmp_path, cli_error):
    assert cli_error(submit.main, ["--run", str(tmp_path)]) == \
        f"error: {tmp_path}: no args.json (is this a hw_churn.train run folder?)"
    (tmp_path / "args.json").write_text(json.dumps({"homework": "hw_segment"}))
    assert cli_error(submit.main, ["--run", str(tmp_path)]) == f"error: {tmp_path}: a run of hw_segment, not of hw_churn"


def test_submit_to_a_missing_folder_is_one_line(tmp_path, cli_error):
    line = cli_error(submit.main, ["--run", str(tmp_path), "--out", str(tmp_path / "no" / "sub.csv")])
    assert line == f"error: --out {tmp_path / 'no' / 'sub.csv'}: folder {tmp_path / 'no'} does not exist"


# -- the saved model: plain numbers and CatBoost's own format, nothing that runs code ------------

def test_logreg_saved_as_numbers_predicts_exactly_like_the_pipeline(sample, tmp_path):
    train_df, test_df = sample
    model = LogRegModel("log+spending", Cs=[0.1, 1.0], inner_folds=3).fit(train_df[FEATURE_COLS],
                                                                         train_df["Churn"].to_numpy())
    (tmp_path / "args.json").write_text(json.dumps({"homework": "hw_churn"}))
    save_model(model, tmp_path, {"name": "logreg_log", "description": model.describe(), "cv_auc": 0.8, "data": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json", "model.json"]  # no catboost.cbm
    loaded = load_model(tmp_path)
    assert loaded.model.pipeline_ is None and loaded.config["kind"] == "logreg"  # rebuilt from numbers alone
    assert loaded.extras == {"name": "logreg_log", "description": model.describe(), "cv_auc": 0.8, "data": "x",
                             "feature_cols": FEATURE_COLS}
    unseen = with_unseen_categories(test_df)[FEATURE_COLS]
    p = model.predict(unseen)
    assert p.std() > 0.05
    np.testing.assert_allclose(loaded.model.predict(unseen), p, rtol=1e-12, atol=1e-12)


class Payload:
    """Unpickling this runs ``open(marker, "w")``: the proof that a loader executed code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("craft, message", [
    ("joblib", r"run: no model\.json, so no trained model .*; train it again"),
    ("cbm", r"catboost\.cbm: not a CatBoost model file \(.*\); train the run again to rewrite it$"),
    ("json", r"model\.json: 'model\.first\.kind' is 'pickle', expected logreg, catboost or blend; train the run "
             r"again to rewrite it$"),
    ("path", r"model\.json: 'model\.file' must be a file name inside the run folder; train the run again"),
    ("text", r"model\.json: not valid JSON \(.*\); train the run again to rewrite it$"),
    ("format", r"model\.json: not a model file of hw_churn\.train \(format 1\); train the run again"),
])
def test_crafted_model_files_are_refused_and_run_no_code(tmp_path, craft, message, cli_error):
    import pickle

    marker = tmp_path / "code_ran"
    run = tmp_path / "run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"homework": "hw_churn"}))
    payload = pickle.dumps(Payload(marker))
    meta = {"format": 1, "name": "blend", "description": "d", "cv_auc": 0.8, "data": "x", "feature_cols": FEATURE_COLS}
    if craft == "joblib":
        (run / "model.joblib").write_bytes(payload)
    elif craft == "cbm":
        (run / "catboost.cbm").write_bytes(payload)
        (run / "model.json").write_text(json.dumps({**meta, "model": {"kind": "catboost", "file": "catboost.cbm",
                                                                      "params": {}}}))
    elif craft == "json":
        spec = {"kind": "blend", "weight": 0.5, "first": {"kind": "pickle", "data": payload.hex()},
                "second": {"kind": "catboost", "file": "catboost.cbm", "params": {}}}
        (run / "model.json").write_text(json.dumps({**meta, "model": spec}))
        (run / "catboost.cbm").write_bytes(payload)
    elif craft == "path":
        (run / "model.json").write_text(json.dumps({**meta, "model": {"kind": "catboost", "file": "../x.cbm",
                                                                      "params": {}}}))
    elif craft == "text":
        (run / "model.json").write_bytes(payload)
    else:
        (run / "model.json").write_text(json.dumps({**meta, "format": 0, "model": {"kind": "catboost"}}))
    line = cli_error(submit.main, ["--run", str(run)])
    assert re.search(message, line), line
    assert not marker.exists()  # the payload never ran
    assert not (run / "submission.csv").exists()


# -- real data -----------------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_data_cleaning_counts(dls_data):
    data = load_churn(real_dataset(dls_data, "churn"), verbose=False)
    assert (len(data.train), len(data.test)) == (5282, 1761)
    assert data.report["train"]["total_spent_blank"] == 6 and data.report["test"]["total_spent_blank"] == 5
    assert data.report["train"]["total_spent_blank_nonzero_period"] == 0
    assert data.report["train"]["duplicates"] == 14
    assert np.bincount(data.y).tolist() == [3896, 1386]
    assert data.train[NUM_COLS].dtypes.eq(np.float64).all()
    assert sorted(data.train["IsSeniorCitizen"].unique()) == ["0", "1"]


@pytest.mark.realdata
def test_real_data_quick_cv_and_submission(dls_data, tmp_path, runs_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = real_dataset(dls_data, "churn")
    run_dir = tmp_path / "run"
    train.main(["--quick", "--data-dir", str(root), "--run-dir", str(run_dir)])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_cv_auc"] > 0.84
    assert metrics["cv_auc_logreg_log"] > metrics["cv_auc_logreg_raw"]  # the log features help
    path = submit.main(["--run", str(run_dir), "--data-dir", str(root), "--out", str(tmp_path / "sub.csv")])
    submission = pd.read_csv(path)
    assert len(submission) == 1761 and submission["Id"].tolist() == list(range(1761))
    assert submission["Churn"].between(0, 1).all() and submission["Churn"].notna().all()
    assert 0.2 < submission["Churn"].mean() < 0.33  # about the train churn rate (26 %)
