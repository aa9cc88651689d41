"""Architecture study: train several classifiers on the same data and split, and compare them.

    python -m hw_classify.compare                                          # built-in shapes, quick
    python -m hw_classify.compare --archs simple_cnn,resnet18,mobilenet_v2,densenet121,efficientnet_b0 \\
        --data-dir PATH/simpsons --epochs 10 --size 128

Every architecture is trained with ``hw_classify.train`` (same split, epochs, size,
augmentation and weights) into ``<compare folder>/runs/<arch>``. ``report.md`` gets one row
per architecture: parameters, training seconds (and CPU seconds), validation macro-F1 and
accuracy; ``plots/compare.png`` shows macro-F1 against training time.
"""
from __future__ import annotations

import argparse
import shlex

import pandas as pd

from core import cli, runs
from core.data import resolve_data_root
from core.plots import save_figure

from . import train
from .models import COMPARE_ARCHS, OWN_MODELS, torchvision_names


def arch_list(text: str) -> list[str]:
    """A ``type=`` for ``--archs``: comma-separated names, each known."""
    names = [a.strip() for a in text.split(",") if a.strip()]
    known = set(OWN_MODELS) | set(torchvision_names())
    unknown = [a for a in names if a not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown architecture(s) {unknown or text!r}; e.g. {','.join(COMPARE_ARCHS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_classify.compare", __doc__.split("\n")[0])
    parser.add_argument("--archs", type=arch_list, default=list(COMPARE_ARCHS),
                        help=f"comma-separated architectures (default {','.join(COMPARE_ARCHS)})")
    parser.add_argument("--data-dir", default=None, help="dataset root; default $DLS_DATA/simpsons, else built-in")
    parser.add_argument("--epochs", type=cli.positive_int, default=None, help="epochs per run (default: the recipe)")
    parser.add_argument("--size", type=cli.int_at_least(96), default=None,
                        help="image side (default: the recipe's; simple_cnn needs at least 94)")
    parser.add_argument("--weights", default="none", help="none, imagenet or a state-dict file (torchvision models)")
    parser.add_argument("--extra", default="", help="more hw_classify.train options for every run, as one string")
    cli.add_run_args(parser, default="runs/hw_classify/compare-<timestamp>")
    return parser


def run_options(args: argparse.Namespace, arch: str, out) -> list[str]:
    options = ["--arch", arch, "--run-dir", str(out / "runs" / arch), *shlex.split(args.extra)]
    weights = args.weights if arch not in OWN_MODELS else "none"
    options += ["--weights", weights, "--size", str(args.size or 128)]
    if args.data_dir:
        options += ["--data-dir", args.data_dir]
    if args.epochs:
        options += ["--epochs", str(args.epochs)]
    return options


def markdown(table: pd.DataFrame, data: str) -> str:
    lines = [f"Architectures compared on {data}.", "",
             "| arch | parameters | train s | CPU s | val macro-F1 | val accuracy |", "|---|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.arch} | {row.parameters:,} | {row.train_seconds:.0f} | {row.cpu_seconds:.0f} "
                     f"| {row.val_f1_macro:.4f} | {row.val_accuracy:.4f} |")
    return "\n".join(lines) + "\n"


def figure(table: pd.DataFrame, path) -> None:
    import matplotlib.pyplot as plt  # core.plots has chosen the file-only backend

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(table["train_seconds"], table["val_f1_macro"], s=20 + table["parameters"] / 1e5)
    for row in table.itertuples():
        ax.annotate(row.arch, (row.train_seconds, row.val_f1_macro), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation macro-F1")
    ax.set_title("architectures (marker area: parameters)")
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    args = cli.parse_args(build_parser(), argv)
    data = resolve_data_root("simpsons", args.data_dir, builtin="built-in generated shapes").description
    run = runs.RunDir.create("hw_classify", args, prefix="compare-")
    rows = []
    for arch in args.archs:
        print(f"== {arch}")
        metrics = train.main(run_options(args, arch, run.path))
        rows.append({"arch": arch, **{k: metrics[k] for k in ("parameters", "train_seconds", "cpu_seconds",
                                                                "val_f1_macro", "val_accuracy")}})
    table = pd.DataFrame(rows)
    table.to_csv(run / "compare.csv", index=False)
    (run / "report.md").write_text(markdown(table, data))
    print(markdown(table, data))
    figure(table, run.plots / "compare.png")
    best = table.loc[table["val_f1_macro"].idxmax()]
    metrics = {"runs": len(table), "best_val_f1_macro": float(best["val_f1_macro"])}
    run.save_metrics(metrics)
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
