"""The validation report of a classification run: scores without and with flip TTA, the
per-class table, the confusion matrix, the worst mistakes and the training curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from core import runs
from core.data import ImageClassificationDataset
from core.device import is_main_process
from core.inference import model_outputs
from core.metrics import classification_scores
from core.plots import confusion_matrix_plot, image_grid, plot_history

from .data import denormalize


def per_class_table(scores: dict, classes: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"class": classes, "precision": scores["precision"], "recall": scores["recall"],
                         "f1": scores["f1"], "support": scores["support"]}).round(4)


def worst_mistakes(probs: torch.Tensor, labels: np.ndarray, n: int = 16) -> np.ndarray:
    """Indices of misclassified samples, most confident wrong prediction first."""
    pred = probs.argmax(1).numpy()
    wrong = np.flatnonzero(pred != labels)
    confidence = probs.max(1).values.numpy()[wrong]
    return wrong[np.argsort(-confidence, kind="stable")][:n]


def evaluate_and_report(run: runs.RunDir, model: nn.Module, val_set: ImageClassificationDataset,
                        classes: list[str], device, title: str = "") -> dict:
    """Score ``model`` on the validation set, without and with flip TTA; write per_class.csv
    and the plots (without TTA, as ``submit`` predicts by default); return ``val_*`` metrics
    (``val_*_tta`` with TTA) and ``f1_<class>`` per class."""
    loader = DataLoader(val_set, batch_size=64)
    probs, probs_tta = (model_outputs(model, loader, device=device, tta_flip=tta, activation="softmax",
                                channels_last=device.type == "cpu") for tta in (False, True))
    labels = np.asarray(val_set.labels)
    with_tta = classification_scores(labels, probs_tta.argmax(1).numpy(), len(classes))
    scores = classification_scores(labels, probs.argmax(1).numpy(), len(classes))
    table = per_class_table(scores, classes)
    if is_main_process():
        table.to_csv(run / "per_class.csv", index=False)
    print(table.to_string(index=False))
    confusion_matrix_plot(scores["cm"], classes, run.plots / "confusion_matrix.png",
                          title=f"validation confusion matrix ({title})")
    worst = worst_mistakes(probs, labels)
    if len(worst):
        images = [denormalize(val_set[i][0]) for i in worst]
        titles = [f"{classes[labels[i]][:14]} -> {classes[int(probs[i].argmax())][:14]} "
                  f"{float(probs[i].max()):.2f}" for i in worst]
        image_grid(images, run.plots / "worst_mistakes.png", titles, ncols=4, cell_size=2.4,
                   title="worst mistakes: true -> predicted (confidence)")
    if (run / "history.csv").is_file():
        plot_history(run / "history.csv", run.plots / "history.png", title=title)
    metrics = {"val_f1_macro": round(scores["f1_macro"], 4), "val_f1_micro": round(scores["f1_micro"], 4),
               "val_accuracy": round(scores["accuracy"], 4), "val_f1_macro_tta": round(with_tta["f1_macro"], 4),
               "val_accuracy_tta": round(with_tta["accuracy"], 4)}
    metrics.update({f"f1_{name}": round(float(f), 4) for name, f in zip(classes, scores["f1"])})
    return metrics
