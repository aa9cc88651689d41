"""The kNN grid search as curves: cross-validated accuracy against k for each metric/weights."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from core.plots import save_figure  # also selects the non-interactive Agg backend


def grid_curves(cv_results: dict, path: str | os.PathLike) -> Path:
    """Mean CV accuracy (with +-1 std band) per ``n_neighbors``, one line per metric x weights."""
    params = cv_results["params"]
    mean, std = np.asarray(cv_results["mean_test_score"]), np.asarray(cv_results["std_test_score"])
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for combo in sorted({(p["metric"], p["weights"]) for p in params}):
        rows = [i for i, p in enumerate(params) if (p["metric"], p["weights"]) == combo]
        rows.sort(key=lambda i: params[i]["n_neighbors"])
        k = [params[i]["n_neighbors"] for i in rows]
        ax.plot(k, mean[rows], marker="o", markersize=3, label=f"{combo[0]}, {combo[1]}")
        ax.fill_between(k, mean[rows] - std[rows], mean[rows] + std[rows], alpha=0.1)
    ax.set_xlabel("n_neighbors")
    ax.set_ylabel("cv accuracy")
    ax.set_title("kNN grid search")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
