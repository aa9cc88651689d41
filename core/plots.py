"""Figures every homework saves: training curves, image grids, confusion matrices, masks.

All functions write a PNG and return its path; they never open a window (the Agg backend is
selected here, before pyplot is imported), so they work on servers and in CI. Under DDP only
rank 0 writes, so a homework can call them unconditionally.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .device import is_main_process  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG and close it. Under DDP only rank 0 writes; the others just close."""
    path = Path(path)
    if is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def to_image_array(image) -> np.ndarray:
    """A torch tensor (C,H,W) or array (H,W[,C]) as a float array (H,W[,C]) for ``imshow``."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image, 0.0, 1.0) if image.ndim == 3 else image


def plot_history(history: pd.DataFrame | str | os.PathLike, path: str | os.PathLike,
                 title: str | None = None) -> Path:
    """Curves of every metric in ``history`` (a ``history.csv`` or its DataFrame) per epoch.

    ``train_x`` and ``val_x`` share one panel; each other column gets its own. Columns
    ``epoch``, ``time`` and ``lr*`` are plotted as the x axis, skipped, and a log-scale panel.
    """
    df = pd.read_csv(history) if not isinstance(history, pd.DataFrame) else history
    x = df["epoch"] if "epoch" in df else np.arange(1, len(df) + 1)
    groups: dict[str, list[str]] = {}
    for col in df.columns:
        if col in ("epoch", "time", "step"):
            continue
        key = col.split("_", 1)[1] if col.startswith(("train_", "val_")) else col
        groups.setdefault(key, []).append(col)
    n = max(len(groups), 1)
    ncols = min(n, 3)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (key, cols) in zip(axes.flat, groups.items()):
        for col in cols:
            ax.plot(x, df[col], marker="o", markersize=3, label=col)
        if key.startswith("lr"):
            ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def image_grid(images: Sequence, path: str | os.PathLike, titles: Sequence[str] | None = None,
               ncols: int = 8, cmap: str | None = None, title: str | None = None,
               cell_size: float = 1.8) -> Path:
    """Show ``images`` (tensors C×H×W in [0, 1], or arrays) in a grid with optional titles."""
    images = list(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, (n + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_size * ncols, cell_size * nrows + 0.3), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = to_image_array(images[i])
        ax.imshow(img, cmap=cmap or ("gray" if img.ndim == 2 else None))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_matrix_plot(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                          normalize: bool = True, title: str = "confusion matrix") -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts or row shares."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(class_names)
    size = max(4.0, 0.45 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                value = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, value, ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 * shown.max() else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


def mask_overlays(images: Sequence, truths: Sequence, preds: Sequence, path: str | os.PathLike,
                  titles: Sequence[str] | None = None) -> Path:
    """One row per example: image, true mask, predicted mask, and both outlines on the image
    (green: truth, red: prediction)."""
    n = len(images)
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.1 * n), squeeze=False)
    for i in range(n):
        img = to_image_array(images[i])
        truth = to_image_array(truths[i]) > 0.5
        pred = to_image_array(preds[i]) > 0.5
        panels = [(img, None, "image"), (truth, "gray", "truth"), (pred, "gray", "prediction")]
        for ax, (data, cmap, name) in zip(axes[i], panels):
            ax.imshow(data, cmap=cmap)
            ax.set_title(name if titles is None else f"{titles[i]}: {name}", fontsize=8)
        axes[i, 3].imshow(img)
        axes[i, 3].contour(truth, levels=[0.5], colors="lime", linewidths=1)
        axes[i, 3].contour(pred, levels=[0.5], colors="red", linewidths=1)
        axes[i, 3].set_title("outlines: green truth, red prediction", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path)


def bar_compare(labels: Sequence[str], series: dict[str, Sequence[float]], path: str | os.PathLike,
                title: str = "", ylabel: str = "", ylim: tuple[float, float] | None = None) -> Path:
    """Grouped bars: one group per label, one bar per series (e.g. predicted vs real frequency)."""
    x = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(labels) + 2), 3.5))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(x, [str(label) for label in labels])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def embedding_scatter(points, labels: Sequence, path: str | os.PathLike, title: str = "",
                      perplexity: float = 30.0, seed: int = 0, max_classes: int = 20) -> Path:
    """A 2-D scatter of ``points`` (n, d) coloured by ``labels``; points with more than two
    dimensions are first embedded in 2-D by t-SNE (van der Maaten & Hinton, 2008;
    scikit-learn's ``TSNE``, perplexity capped below n). At most ``max_classes`` labels get a
    colour and a legend entry (the most frequent ones); the rest are drawn grey."""
    points = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points, dtype=np.float64)
    labels = np.asarray(labels)
    if points.ndim != 2 or len(points) != len(labels):
        raise ValueError(f"expected points (n, d) and n labels, got {points.shape} and {labels.shape}")
    if points.shape[1] > 2:
        from sklearn.manifold import TSNE

        perplexity = min(perplexity, max(1.0, (len(points) - 1) / 3))
        points = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    elif points.shape[1] == 1:
        points = np.c_[points, np.zeros(len(points))]
    names, counts = np.unique(labels, return_counts=True)
    shown = set(names[np.argsort(-counts, kind="stable")[:max_classes]].tolist())
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    other = np.array([label not in shown for label in labels.tolist()])
    if other.any():
        ax.scatter(points[other, 0], points[other, 1], s=6, c="lightgrey", label="other")
    colours = plt.get_cmap("tab10" if len(shown) <= 10 else "tab20")
    for i, name in enumerate(sorted(shown)):
        rows = labels == name
        ax.scatter(points[rows, 0], points[rows, 1], s=6, color=colours(i % colours.N), label=str(name))
    ax.legend(markerscale=2.5, fontsize=7, loc="best", ncol=1 if len(shown) <= 10 else 2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def box_overlays(images: Sequence, truths: Sequence[dict] | None, preds: Sequence[dict], path: str | os.PathLike,
                 class_names: Sequence[str], titles: Sequence[str] | None = None, ncols: int = 3,
                 score_threshold: float = 0.3) -> Path:
    """Images with true boxes (dashed green) and predicted boxes scoring at least
    ``score_threshold`` (solid, one colour per class, labelled with class and score).

    Boxes are dicts ``{"boxes": (N, 4) x1 y1 x2 y2, "labels": (N,)[, "scores": (N,)]}`` in
    the image's pixels; ``truths`` may be ``None`` (predictions only)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, (n + ncols - 1) // ncols)
    colours = plt.get_cmap("tab10")
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 4.2 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(to_image_array(images[i]))
        for box in (np.asarray(truths[i]["boxes"]) if truths is not None else []):
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                       edgecolor="lime", linestyle="--", linewidth=1.2))
        pred = {k: np.asarray(v) for k, v in preds[i].items()}
        keep = pred["scores"] >= score_threshold
        for box, label, score in zip(pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep]):
            colour = colours(int(label) % 10)
            ax.add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False,
                                       edgecolor=colour, linewidth=1.2))
            ax.text(box[0], box[1] - 2, f"{class_names[int(label)]} {score:.2f}", color=colour, fontsize=6)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    fig.suptitle("dashed green: true boxes; solid: predictions" if truths is not None else "predictions",
                 fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
