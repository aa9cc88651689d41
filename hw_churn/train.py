"""Churn prediction (course HW3, Kaggle "advanced-dls-spring-2021"): EDA, logistic regression,
CatBoost and their blend, scored by 5-fold stratified CV ROC-AUC.

    python -m hw_churn.train                          # $DLS_DATA/churn, else a built-in sample
    python -m hw_churn.train --data-dir PATH/TO/CHURN # a folder with the Kaggle train.csv, test.csv
    python -m hw_churn.train --quick                  # a fast configuration (well under a minute)
    python -m hw_churn.submit --run RUN               # then write RUN/submission.csv

The Kaggle files come with the kaggle CLI (after accepting the competition rules):
``kaggle competitions download -c advanced-dls-spring-2021`` and unzip into one folder.

Every model is scored on the same 5 stratified folds; each step of the study becomes a row of
``cv_results.csv``/``cv_results.md`` with its gain over the CatBoost baseline (the course's
parameters), and the best final model (logistic regression, the searched CatBoost, or their
blend) is refitted on all training rows and saved for ``submit`` as ``model.json`` (plus
``catboost.cbm``, CatBoost's own format, when CatBoost is part of it; nothing pickled, see
:func:`hw_churn.models.save_model`; ``hw_churn.load_model(RUN)`` reads it back). The run
folder also gets ``data_report.md``/``data_report.json``, the EDA figures under ``plots/`` and
``metrics.json``.
"""
from __future__ import annotations

import argparse
import time

import pandas as pd

from core import cli, runs
from core.data import resolve_data_root

from . import eda
from .data import load_churn
from .models import (CATBOOST_COURSE, CATBOOST_GRID, CATBOOST_GRID_QUICK, BlendModel, CatBoostModel, CVResult,
                     LogRegModel, best_blend_weight, cross_validate, cross_validate_blend, save_model,
                     search_catboost, stratified_folds)

BUILTIN = "built-in churn sample (generated with a fixed seed: 1200 train / 400 test rows, Kaggle schema)"
MODEL_CHOICES = ("logreg", "catboost", "blend", "all")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_churn.train", "Churn prediction (HW3): EDA, logistic regression, CatBoost "
                             "and their blend, scored by stratified CV ROC-AUC.")
    parser.epilog = ("Data: a folder with the Kaggle train.csv and test.csv, from "
                     "'kaggle competitions download -c advanced-dls-spring-2021'. Then: "
                     "python -m hw_churn.submit --run RUN")
    cli.add_data_args(parser, "churn", loader=False)
    cli.add_run_args(parser)
    group = parser.add_argument_group("churn")
    group.add_argument("--model", choices=MODEL_CHOICES, default="all",
                       help="logreg / catboost / blend: that model's steps only, saved as the final model; "
                            "all: every step, and the best by CV is saved")
    group.add_argument("--seed", type=int, default=1, help="seed of the folds, the searches and CatBoost")
    group.add_argument("--folds", type=cli.int_at_least(2), default=5, help="number of stratified CV folds")
    group.add_argument("--threads", type=cli.positive_int, default=2, help="CatBoost threads")
    group.add_argument("--catboost-defaults", action="store_true",
                       help="also score CatBoost with its default parameters (1000 trees), when --model runs "
                            "CatBoost (catboost, blend, all)")
    group.add_argument("--quick", action="store_true",
                       help="fast configuration: 3 inner folds for C, no log+spending logreg step, 2 CatBoost "
                            "candidates at a higher learning rate (at most 600 trees, patience 50), no "
                            "course-parameter CatBoost baseline")
    return parser


class Study:
    """The rows of the CV table, in the order the steps ran."""

    def __init__(self):
        self.rows: list[dict] = []
        self.results: dict[str, CVResult] = {}

    def add(self, key: str, description: str, result: CVResult, seconds: float) -> CVResult:
        self.results[key] = result
        self.rows.append({"step": key, "description": description, "cv_auc": result.mean, "cv_std": result.std,
                          "folds": " ".join(f"{a:.4f}" for a in result.fold_auc), "seconds": round(seconds, 1)})
        return result

    def table(self) -> pd.DataFrame:
        table = pd.DataFrame(self.rows)
        baseline = "catboost_course" if "catboost_course" in self.results else table["step"].iloc[0]
        table["gain_vs_" + baseline] = table["cv_auc"] - self.results[baseline].mean
        table["gain_vs_previous"] = table["cv_auc"].diff().fillna(0.0)
        return table


def run_logreg_steps(X, y, folds, args, study: Study) -> None:
    inner = 3 if args.quick else 5
    feature_steps = [("logreg_raw", "raw", "logreg: scaled numerics + one-hot, C searched"),
                     ("logreg_log", "log", "logreg + log1p(ClientPeriod), log1p(TotalSpent)")]
    if args.model == "all" and not args.quick:
        feature_steps.append(("logreg_log_spending", "log+spending",
                              "logreg + log + avg monthly spent, spending change, #services, tenure bucket"))
    for key, features, description in feature_steps:
        start = time.time()
        result = cross_validate(lambda: LogRegModel(features, inner_folds=inner, seed=args.seed), X, y, folds, key)
        study.add(key, description, result, time.time() - start)


def run_catboost_steps(X, y, folds, args, study: Study) -> dict:
    """The CatBoost baselines (unless --quick), then the search and the CV of its winner."""
    make = lambda params: (lambda: CatBoostModel(params, args.seed, args.threads))  # noqa: E731
    baselines = [] if args.quick else [("catboost_course", CATBOOST_COURSE, "catboost, course params: 500 trees, "
                                        "lr 0.03, Ordered boosting")]
    if args.catboost_defaults:
        baselines.insert(0, ("catboost_default", {}, "catboost, default params"))
    for key, params, description in baselines:
        start = time.time()
        study.add(key, description, cross_validate(make(params), X, y, folds, key), time.time() - start)
    start = time.time()
    grid, cap = (CATBOOST_GRID_QUICK, 600) if args.quick else (CATBOOST_GRID, 2000)
    chosen, search_table = search_catboost(X, y, grid, seed=args.seed, threads=args.threads, max_iterations=cap,
                                           patience=50 if args.quick else 100)
    result = cross_validate(make(chosen), X, y, folds, "catboost_searched")
    study.add("catboost_searched", f"catboost, searched on a validation fold: {CatBoostModel(chosen).describe()}",
              result, time.time() - start)
    return {"params": chosen, "search": search_table}


def main(argv: list[str] | None = None) -> dict:
    """Run the study into the run folder and save the final model there.

    Returns:
        ``{"run": folder, "metrics": metrics.json's values, "table": the CV table, "best": the
        final model's step, "model": the final model, fitted on all rows, as saved}``.
    """
    args = cli.parse_args(build_parser(), argv)
    start = time.time()
    source = resolve_data_root("churn", args.data_dir, builtin=BUILTIN)
    data = load_churn(source.root)
    X, y = data.X, data.y
    cli.check_folds(args.folds, y, "--folds")
    run = runs.RunDir.create("hw_churn", args)

    # -- data report and EDA figures
    eda.print_report(data.train, data.report)
    (run / "data_report.md").write_text(eda.data_report(data.train, data.test, data.report, args.seed))
    run.save_json("data_report.json", data.report)
    eda.plot_numeric(data.train, run.plots / "numeric_by_target.png")
    eda.plot_categorical(data.train, run.plots / "categorical_counts.png")
    eda.plot_target(data.train, run.plots / "target_balance.png")

    # -- the study: every step on the same folds
    folds = stratified_folds(y, args.folds, args.seed)
    print(f"cross-validation: {args.folds} stratified folds (seed {args.seed}), model set '{args.model}'"
          + (" (quick)" if args.quick else ""))
    study, finals = Study(), {}  # finals: the candidates for the saved model, as factories
    inner = 3 if args.quick else 5
    if args.model in ("logreg", "blend", "all"):
        run_logreg_steps(X, y, folds, args, study)
        make_linear = lambda: LogRegModel("log", inner_folds=inner, seed=args.seed)  # noqa: E731
        finals["logreg_log"] = make_linear
    if args.model in ("catboost", "blend", "all"):
        catboost = run_catboost_steps(X, y, folds, args, study)
        catboost["search"].to_csv(run / "catboost_search.csv", index=False)
        make_boosted = lambda: CatBoostModel(catboost["params"], args.seed, args.threads)  # noqa: E731
        finals["catboost_searched"] = make_boosted
    if args.model in ("blend", "all"):
        linear, boosted = study.results["logreg_log"], study.results["catboost_searched"]
        blend = cross_validate_blend(linear, boosted, y, folds, "blend")
        study.add("blend", "blend: w x logreg_log + (1-w) x catboost_searched, w chosen on the other folds", blend, 0)
        weight = best_blend_weight(linear.oof, boosted.oof, y)
        finals["blend"] = lambda: BlendModel(make_linear(), make_boosted(), weight)
    if args.model != "all":
        finals = {key: make for key, make in finals.items() if key.startswith(args.model)}

    # -- the CV table, then the final model refitted on all rows
    table = study.table()
    table.to_csv(run / "cv_results.csv", index=False)
    (run / "cv_results.md").write_text(eda.markdown_table(table.astype({"seconds": str})) + "\n")
    print(eda.markdown_table(table[["step", "cv_auc", "cv_std", table.columns[-2], "gain_vs_previous"]]))
    best = max(finals, key=lambda key: study.results[key].mean)
    model = finals[best]().fit(X, y)
    print(f"final model: {best} ({model.describe()}), CV ROC-AUC {study.results[best].mean:.4f}; refitted on "
          f"all {len(y)} rows")
    save_model(model, run.path, {"name": best, "description": model.describe(), "cv_auc": study.results[best].mean,
                                 "data": source.description})

    metrics = {f"cv_auc_{key}": result.mean for key, result in study.results.items()}
    metrics.update({f"cv_std_{key}": result.std for key, result in study.results.items()})
    metrics.update(best_cv_auc=study.results[best].mean, best_cv_std=study.results[best].std,
                   train_rows=len(y), test_rows=len(data.test),
                   total_spent_blank_train=data.report["train"]["total_spent_blank"],
                   duplicates_train=data.report["train"]["duplicates"], seconds=round(time.time() - start, 1))
    if isinstance(model, LogRegModel):
        metrics["logreg_C"] = model.C_
    if isinstance(model, BlendModel):
        metrics.update(blend_weight=model.weight, logreg_C=model.first.C_)
    run.save_metrics(metrics)
    run.summary({"best": study.results[best].mean, "model": best, "seconds": metrics["seconds"]})
    return {"run": run.path, "metrics": metrics, "table": table, "best": best, "model": model}


if __name__ == "__main__":
    cli.run_command(main)
