"""HW2 figures: the descent path on the surface of f, the loss per batch, the decision boundary."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from core.plots import save_figure  # also selects the non-interactive Agg backend

def descent_path(f: Callable, steps: np.ndarray, path: str | os.PathLike, margin: float = 1.0) -> Path:
    """The surface of ``f`` around the path (3-D), the path on its contour map, and f per step."""
    lo, hi = steps[:, :2].min() - margin, steps[:, :2].max() + margin
    grid = np.linspace(lo, hi, 120)
    x1, x2 = np.meshgrid(grid, grid)
    z = f(np.stack([x1, x2]))
    fig = plt.figure(figsize=(14, 4.2))
    ax3d = fig.add_subplot(1, 3, 1, projection="3d")
    ax3d.plot_surface(x1, x2, z, cmap="viridis", alpha=0.6, linewidth=0)
    ax3d.plot(steps[:, 0], steps[:, 1], steps[:, 2], "r.-", zorder=10)
    ax3d.set_xlabel("x1")
    ax3d.set_ylabel("x2")
    ax3d.set_title("f(x) = sin(x1)^2 + sin(x2)^2")
    ax = fig.add_subplot(1, 3, 2)
    contour = ax.contourf(x1, x2, z, levels=20, cmap="viridis")
    fig.colorbar(contour, ax=ax, fraction=0.046)
    ax.plot(steps[:, 0], steps[:, 1], "r.-")
    ax.plot(*steps[0, :2], "wo", label="start")
    ax.legend(fontsize=8)
    ax.set_title("descent path")
    ax = fig.add_subplot(1, 3, 3)
    ax.plot(steps[:, 2], marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("f(x)")
    ax.set_title("f per step")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def batch_losses(losses: list[float], path: str | os.PathLike, title: str = "log-loss per batch") -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, linewidth=0.8)
    ax.set_xlabel("batch")
    ax.set_ylabel("log-loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def decision_boundary(model, X: np.ndarray, y: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """P(y = 1) of a 2-feature model as a colour map, its 0.5 line, and the points."""
    pad = 1.0
    xx, yy = np.meshgrid(np.linspace(X[:, 0].min() - pad, X[:, 0].max() + pad, 200),
                         np.linspace(X[:, 1].min() - pad, X[:, 1].max() + pad, 200))
    proba = model.predict_proba(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.contourf(xx, yy, proba, levels=20, cmap="RdBu_r", alpha=0.5)
    ax.contour(xx, yy, proba, levels=[0.5], colors="k")
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", s=8, edgecolors="k", linewidths=0.2)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
