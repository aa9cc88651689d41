"""The homework's report, generated: train every model x loss pair and compare them.

    python -m hw_segment.compare                                  # 3 models x 5 losses, built-in data
    python -m hw_segment.compare --models unet segnet --losses dice bce --data-dir PATH/TO/PH2
    python -m hw_segment.compare --against-smp --data-dir PATH/TO/PH2 --size 128 --seeds 0 1 2

Each pair is trained with ``hw_segment.train`` (same recipe, same split) for every split seed
in ``--seeds``, into ``<compare folder>/runs/<model>-<loss>-split<seed>``. ``--resume`` continues
an interrupted comparison in its folder (``--run-name``/``--run-dir``): a finished run is reused
only when it was asked for with the same options on the same data, else it is trained again.
``report.md`` gets one row per pair: test IoU mean and spread (over test images, or over seeds
when there are several), val IoU, the course's thresholded score, seconds per epoch and
parameters; the best loss of each model is marked, and ``plots/predictions.png`` shows the
test images with each model's best prediction (each run's model read by
:func:`hw_segment.load_model`).

``--against-smp`` instead trains our UNet with its default recipe and
segmentation_models_pytorch's ``Unet(resnet18, encoder_weights=None)`` with the same data,
loss, augmentation and optimiser for the same wall time, and reports both test IoUs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from core import cli
from core.runs import ARGS_FILE, RunDir
from core.data import resolve_data_root
from core.errors import UserError
from core.inference import model_outputs
from core.plots import image_grid

from . import train
from .models import MODEL_NAMES, load_model


def build_parser() -> argparse.ArgumentParser:
    from core.losses import LOSS_NAMES

    parser = cli.make_parser("hw_segment.compare", "Train the model x loss grid and write report.md.")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--losses", nargs="+", default=list(LOSS_NAMES),
                        help="loss specs as in hw_segment.train --loss")
    parser.add_argument("--seeds", nargs="+", type=cli.nonneg_int, default=[0], help="split seeds (one run per seed)")
    parser.add_argument("--epochs", type=cli.positive_int, default=None, help="epochs per run (default: the recipe)")
    parser.add_argument("--size", type=cli.positive_int, default=None, help="image size (default: the recipe)")
    parser.add_argument("--data-dir", default=None, help="PH2 root; default $DLS_DATA/ph2, else built-in images")
    parser.add_argument("--against-smp", action="store_true",
                        help="compare our UNet with smp's Unet(resnet18) at equal wall time instead of the grid")
    parser.add_argument("--extra", default="", help="more hw_segment.train options for every run, as one string")
    parser.add_argument("--resume", action="store_true",
                        help="continue the comparison in --run-name/--run-dir: reuse its finished runs whose "
                             "options and data match, train the others")
    cli.add_run_args(parser, default="runs/hw_segment/compare-<timestamp>")
    return parser


REQUEST_FILE = "compare_request.json"  # in each trained run: the options and data it was asked for
NOT_SETTINGS = {"run_dir", "run_name", "overwrite", "resume", "config", "num_workers"}


def requested_settings(options: list[str], data: str) -> dict:
    """What a run of ``hw_segment.train options`` computes: its parsed options (output places
    left out) and the data it reads. A bad option stops here, before any training."""
    parsed = cli.parse_args(train.build_parser(), options)
    settings = {key: value for key, value in vars(parsed).items() if key not in NOT_SETTINGS}
    return json.loads(json.dumps({"options": settings, "data": data}))


def train_one(out: Path, name: str, options: list[str], data: str) -> dict:
    """Run ``hw_segment.train`` into ``out/runs/name`` and return its metrics. A finished run
    there is reused only when it was asked for with the same settings; otherwise it is replaced."""
    run_dir = out / "runs" / name
    request = requested_settings(options, data)
    record = run_dir / REQUEST_FILE
    if (run_dir / "metrics.json").is_file() and record.is_file() and json.loads(record.read_text()) == request:
        print(f"== {name}: reusing {run_dir} (same options and data)")
        return json.loads((run_dir / "metrics.json").read_text())
    replace = (run_dir / ARGS_FILE).is_file()
    print(f"== {name}" + (": settings differ from the run there, or it did not finish: training it again"
                          if replace else ""))
    metrics = train.main(options + ["--run-dir", str(run_dir)] + (["--overwrite"] if replace else []))
    record.write_text(json.dumps(request, indent=2) + "\n")
    return metrics


def common_options(args: argparse.Namespace) -> list[str]:
    options = []
    for flag, value in (("--epochs", args.epochs), ("--size", args.size), ("--data-dir", args.data_dir)):
        if value is not None:
            options += [flag, str(value)]
    return options + args.extra.split()


def grid_plan(args: argparse.Namespace) -> list[dict]:
    """One entry per model x loss x seed: its run name and ``hw_segment.train`` options."""
    return [{"model": model, "loss": loss, "seed": seed, "run": f"{model}-{loss}-split{seed}".replace("*", "x"),
             "options": common_options(args) + ["--model", model, "--loss", loss, "--split-seed", str(seed)]}
            for model in args.models for loss in args.losses for seed in args.seeds]


def run_grid(plan: list[dict], out: Path, data: str) -> pd.DataFrame:
    rows = []
    for item in plan:
        metrics = train_one(out, item["run"], item["options"], data)
        rows.append({key: item[key] for key in ("model", "loss", "seed", "run")} | metrics)
    return pd.DataFrame(rows)


def check_plan(args: argparse.Namespace, plan: list[dict]) -> None:
    """Every loss spec and every run's options are valid, before anything is trained."""
    from core.losses import get_loss

    for loss in args.losses:
        try:
            get_loss(loss)
        except (ValueError, KeyError) as exc:
            raise UserError(f"--losses {loss}: {exc}") from None
    for item in plan:
        requested_settings(item["options"], "")


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model x loss: means over seeds; the spread is over seeds when there are
    several, else over the test images of the single run."""
    groups = runs.groupby(["model", "loss"], sort=False)
    table = groups.agg(test_iou=("test_iou", "mean"), val_iou=("val_iou", "mean"), test_dice=("test_dice", "mean"),
                       test_score=("test_score", "mean"), seconds_per_epoch=("seconds_per_epoch", "mean"),
                       parameters=("parameters", "first"), runs=("run", "count")).reset_index()
    spread = groups["test_iou"].std() if runs["seed"].nunique() > 1 else groups["test_iou_std"].first()
    table.insert(3, "test_iou_spread", spread.values)
    table["best_of_model"] = False
    table.loc[table.groupby("model", sort=False)["test_iou"].idxmax().values, "best_of_model"] = True
    return table


def markdown(table: pd.DataFrame, over: str) -> str:
    best = table["test_iou"].idxmax()
    lines = [f"| model | loss | test IoU | ± ({over}) | val IoU | test Dice | course score | s/epoch | parameters |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        mark = " **(best)**" if row.Index == best else (" *(best loss)*" if row.best_of_model else "")
        lines.append(f"| {row.model} | {row.loss}{mark} | {row.test_iou:.4f} | {row.test_iou_spread:.4f} | "
                     f"{row.val_iou:.4f} | {row.test_dice:.4f} | {row.test_score:.3f} | "
                     f"{row.seconds_per_epoch:.2f} | {row.parameters:,} |")
    return "\n".join(lines) + "\n"


def prediction_figure(args: argparse.Namespace, out: Path, runs: pd.DataFrame, table: pd.DataFrame,
                      n_images: int = 6) -> Path:
    """Rows of test images (first split seed): image, truth, then each model's best prediction."""
    seed = runs["seed"].iloc[0]
    best = table[table["best_of_model"]].drop_duplicates("model")
    columns = []
    for row in best.itertuples():
        name = runs[(runs.model == row.model) & (runs.loss == row.loss) & (runs.seed == seed)].run.iloc[0]
        loaded = load_model(out / "runs" / name)
        columns.append((loaded, f"{row.model} / {row.loss}"))
    run_args = argparse.Namespace(**loaded.settings)
    source = resolve_data_root("ph2", args.data_dir, announce=False)
    test = train.split_data(train.load_data(run_args, source.builtin, source.root), seed)[2]
    n = min(n_images, len(test))
    preds = [(model_outputs(loaded.model, test.images[:n]) > loaded.extras["threshold"]).float() for loaded, _ in columns]
    images, titles = [], []
    for i in range(n):
        images += [test.images[i], test.masks[i]] + [p[i] for p in preds]
        titles += [test.names[i], "truth"] + [label for _, label in columns]
    return image_grid(images, out / "plots" / "predictions.png", titles=titles, ncols=2 + len(columns))


def against_smp(args: argparse.Namespace, out: Path, data: str) -> dict:
    """Our UNet (default recipe) vs smp's Unet(resnet18, no weights) at equal training time."""
    results = {}
    for seed in args.seeds:
        base = common_options(args) + ["--split-seed", str(seed)]
        ours = train_one(out, f"unet-split{seed}", base + ["--model", "unet"], data)
        smp_epochs = epochs_for_budget("smp-unet", ours["train_seconds"], base, out, seed, data)
        theirs = train_one(out, f"smp-unet-split{seed}", base + ["--model", "smp-unet", "--epochs", str(smp_epochs)],
                           data)
        for key, metrics in (("unet", ours), ("smp_unet", theirs)):
            for name in ("test_iou", "val_iou", "train_seconds", "epochs", "parameters"):
                results.setdefault(f"{key}_{name}", []).append(metrics[name])
            # with --select last the val cases choose nothing either: val + test are all unseen
            results.setdefault(f"{key}_unseen_iou", []).append((metrics["val_iou"] + metrics["test_iou"]) / 2)
    summary = {key: float(np.mean(values)) for key, values in results.items()}
    summary["seeds"] = len(args.seeds)
    lines = ["| model | test IoU (mean over splits) | per split | val+test IoU | per split | train s | epochs "
             "| parameters |", "|---|---|---|---|---|---|---|---|"]
    for key, label in (("unet", "our UNet (default recipe)"), ("smp_unet", "smp Unet(resnet18), no weights")):
        per_split = ", ".join(f"{v:.3f}" for v in results[f"{key}_test_iou"])
        unseen = ", ".join(f"{v:.3f}" for v in results[f"{key}_unseen_iou"])
        lines.append(f"| {label} | {summary[f'{key}_test_iou']:.4f} | {per_split} "
                     f"| {summary[f'{key}_unseen_iou']:.4f} | {unseen} "
                     f"| {summary[f'{key}_train_seconds']:.0f} | {summary[f'{key}_epochs']:.0f} "
                     f"| {summary[f'{key}_parameters']:,.0f} |")
    (out / "against_smp.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return summary


def epochs_for_budget(model: str, seconds: float, base: list[str], out: Path, seed: int, data: str) -> int:
    """How many epochs of ``model`` fit in ``seconds``: time a two-epoch run (its second
    epoch, train + validation, after the warm-up) and divide."""
    name = f"probe-{model}-split{seed}"
    train_one(out, name, base + ["--model", model, "--epochs", "2"], data)
    per_epoch = float(pd.read_csv(out / "runs" / name / "history.csv")["time"].iloc[-1])
    return max(1, int(seconds // per_epoch))


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    plan = grid_plan(args)
    check_plan(args, [{"options": common_options(args) + ["--model", "unet"]}] if args.against_smp else plan)
    data = resolve_data_root("ph2", args.data_dir, builtin="built-in procedural lesion images").description
    run = RunDir.create("hw_segment", args, prefix="compare-")
    if args.against_smp:
        summary = against_smp(args, run.path, data)
        run.save_metrics(summary)
        run.summary(summary)
        return summary
    runs = run_grid(plan, run.path, data)
    runs.to_csv(run / "runs.csv", index=False)
    table = summarise(runs)
    over = "seeds" if len(args.seeds) > 1 else "test images"
    (run / "report.md").write_text(markdown(table, over))
    print(markdown(table, over))
    prediction_figure(args, run.path, runs, table)
    best = table.loc[table["test_iou"].idxmax()]
    metrics = {"runs": len(runs), "best_test_iou": float(best["test_iou"])}
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
