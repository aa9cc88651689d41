"""Exploratory figures and the data report (the homework's "load" and "analyse" parts).

The figures: numeric histograms and boxplots split by the target, the value counts of all 16
categoricals in one ``plt.subplots`` figure (bars split by the target), and the target balance.
The report: random rows, missing/blank cells, duplicates and dtypes, as Markdown.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from core.plots import plt, save_figure  # core.plots selects the Agg backend before pyplot loads

from .data import CAT_COLS, NUM_COLS, TARGET_COL

COLORS = {0: "tab:blue", 1: "tab:red"}


def plot_numeric(train: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Per numeric column: a histogram per target class (densities), and boxplots by class."""
    fig, axes = plt.subplots(2, len(NUM_COLS), figsize=(4.5 * len(NUM_COLS), 6.5))
    for j, column in enumerate(NUM_COLS):
        groups = [train.loc[train[TARGET_COL] == c, column] for c in (0, 1)]
        for c, values in zip((0, 1), groups):
            axes[0, j].hist(values, bins=30, alpha=0.55, density=True, color=COLORS[c], label=f"Churn={c}")
        axes[0, j].set_title(column)
        axes[0, j].legend(fontsize=8)
        axes[1, j].boxplot(groups, tick_labels=["Churn=0", "Churn=1"])
        axes[1, j].set_ylabel(column)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_categorical(train: pd.DataFrame, path: str | os.PathLike, ncols: int = 4) -> Path:
    """``value_counts`` of every categorical column, bars stacked by the target, in one figure."""
    nrows = int(np.ceil(len(CAT_COLS) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, column in zip(axes.flat, CAT_COLS):
        counts = pd.crosstab(train[column], train[TARGET_COL]).reindex(columns=[0, 1], fill_value=0)
        counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index]
        x = np.arange(len(counts))
        ax.bar(x, counts[0], color=COLORS[0], label="Churn=0")
        ax.bar(x, counts[1], bottom=counts[0], color=COLORS[1], label="Churn=1")
        ax.set_xticks(x, [str(v) for v in counts.index], rotation=25, ha="right", fontsize=7)
        ax.set_title(column, fontsize=9)
    for ax in list(axes.flat)[len(CAT_COLS):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_target(train: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Counts of Churn 0/1 with their shares."""
    counts = train[TARGET_COL].value_counts().reindex([0, 1], fill_value=0)
    fig, ax = plt.subplots(figsize=(4, 3.2))
    ax.bar(["0 (stays)", "1 (churns)"], counts.to_numpy(), color=[COLORS[0], COLORS[1]])
    for i, n in enumerate(counts):
        ax.text(i, n, f"{n} ({n / counts.sum():.0%})", ha="center", va="bottom", fontsize=9)
    ax.set_title("target balance")
    ax.set_ylabel("clients")
    fig.tight_layout()
    return save_figure(fig, path)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A DataFrame as a GitHub Markdown table (index not shown)."""
    def cell(value) -> str:
        return format(value, floatfmt) if isinstance(value, (float, np.floating)) else str(value)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def data_report(train: pd.DataFrame, test: pd.DataFrame, report: dict, seed: int = 1) -> str:
    """The data report as Markdown: random rows, then per-column dtype, NaNs and blank cells
    in train and test, then the blank TotalSpent and duplicate counts."""
    sample = train.sample(n=min(5, len(train)), random_state=seed)
    columns = pd.DataFrame({
        "column": list(train.columns),
        "dtype": [report["train"]["dtypes"][c] for c in train.columns],
        "train NaN": [report["train"]["nan"].get(c, 0) for c in train.columns],
        "train blank": [report["train"]["blank_cells"].get(c, 0) for c in train.columns],
        "test NaN": [report["test"]["nan"].get(c, 0) if c in test.columns else "-" for c in train.columns],
        "test blank": [report["test"]["blank_cells"].get(c, 0) if c in test.columns else "-" for c in train.columns],
    })
    lines = ["# Data report", "", f"train: {len(train)} rows, test: {len(test)} rows", "",
             "## Random rows of train", "", markdown_table(sample, ".2f"), "",
             "## Columns (after cleaning; NaN counted after, blank cells before)", "", markdown_table(columns), ""]
    for part in ("train", "test"):
        r = report[part]
        lines.append(f"- {part}: TotalSpent blank in {r['total_spent_blank']} rows, set to 0 "
                     f"({r['total_spent_blank_nonzero_period']} of them with ClientPeriod > 0); "
                     f"{r['duplicates']} exact duplicate rows, kept")
    return "\n".join(lines) + "\n"


def print_report(train: pd.DataFrame, report: dict) -> None:
    """The short version for the terminal: dtypes, NaNs, blanks, target balance."""
    r = report["train"]
    kinds = pd.Series(r["dtypes"]).value_counts().to_dict()
    print(f"columns: {len(NUM_COLS)} numeric, {len(CAT_COLS)} categorical; dtypes after cleaning {kinds}")
    print(f"NaN cells: train {sum(r['nan'].values())}, test {sum(report['test']['nan'].values())}; "
          f"blank cells in train {r['blank_cells'] or 'none'}")
    share = train[TARGET_COL].mean()
    churned = int(train[TARGET_COL].sum())
    print(f"target: {len(train) - churned} stay / {churned} churn ({share:.1%} positive)")
