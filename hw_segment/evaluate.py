"""Score a trained run on every case of a data set (no split), e.g. a model trained on the
built-in images scored on real PH2, or a PH2 model on another PH2 copy.

    python -m hw_segment.evaluate --run runs/hw_segment/<name> --data-dir PATH/TO/PH2

The run's ``args.json`` says which model, width and image size to rebuild and which checkpoint
(``last.pt`` or ``best.pt``, its ``--select``) holds the weights. Writes ``metrics.json`` (mean
IoU, Dice and course score over the cases), ``per_case.csv`` and a figure of the worst cases
into ``--run-dir`` (default: a new folder ``<run>/eval-<data folder name>-<timestamp>``).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from core import cli, runs
from core.data import DataError, resolve_data_root
from core.device import pick_device
from core.inference import predict
from core.plots import mask_overlays
from core.predictor import load_weights, task_weights

from .data import load_ph2, make_lesions
from .models import build_model
from .task import score_logits
from .train import model_options

TRAIN_KEYS = ("model", "width", "size")  # what args.json of a hw_segment.train run must say


def load_trained_model(run: str | Path) -> tuple[torch.nn.Module, dict]:
    """The model of a training run (``args.json`` + the checkpoint its ``--select`` names, read
    weights-only) in eval mode, and its arguments."""
    run = Path(run)
    args_path = run / "args.json"
    if not run.is_dir():
        raise DataError(f"--run {run}: folder does not exist")
    if not args_path.is_file():
        raise DataError(f"{run}: no args.json (is this a hw_segment.train run folder?)")
    try:
        args = json.loads(args_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{args_path}: cannot read as JSON ({exc})") from None
    missing = [key for key in TRAIN_KEYS if not isinstance(args, dict) or key not in args]
    if missing:
        raise DataError(f"{args_path}: no {', '.join(missing)}: not a hw_segment.train run")
    try:
        model = build_model(args["model"], args["width"], **model_options(args))
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{args_path}: cannot rebuild the model ({exc})") from None
    state = task_weights(load_weights(run / f"{args.get('select', 'best')}.pt"))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:2]
        raise DataError(f"{run}: the checkpoint does not fit the model of args.json ({' '.join(first)})") from None
    return model.eval(), args


def main(argv: list[str] | None = None) -> dict:
    parser = cli.make_parser("hw_segment.evaluate", "Score a trained segmentation run on every case of a data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_segment.train")
    parser.add_argument("--data-dir", default=None, help="PH2 root; default $DLS_DATA/ph2, else built-in images")
    parser.add_argument("--n-images", type=cli.positive_int, default=100,
                        help="number of built-in images when no data is found")
    parser.add_argument("--device", type=cli.device_name, default="auto", help="auto, cpu, cuda, mps")
    cli.add_run_args(parser)
    args = cli.parse_args(parser, argv)
    model, train_args = load_trained_model(args.run)
    size = train_args["size"]
    source = resolve_data_root("ph2", args.data_dir, builtin="built-in procedural lesion images")
    data = make_lesions(args.n_images, size, seed=12345) if source.builtin else load_ph2(source.root, size)
    print(f"model: {train_args['model']} (width {train_args['width']}) from {args.run}; data: {data.description}")
    # a new folder per evaluation: two data folders with the same name never share one
    run = runs.RunDir.create("hw_segment", args, parent=args.run,
                            prefix=f"eval-{source.root.name if source.root else 'builtin'}-")

    device = pick_device(args.device)
    logits = predict(model.to(device), data.images, device=device)
    scores = score_logits(logits, data.masks)
    table = pd.DataFrame({"case": data.names, **{k: v.numpy() for k, v in scores.items()},
                          "foreground": data.masks.mean((1, 2, 3)).numpy()})
    table.to_csv(run / "per_case.csv", index=False, float_format="%.4f")
    metrics = {"cases": len(data), **{k: round(v.mean().item(), 4) for k, v in scores.items()},
               "iou_std": round(scores["iou"].std().item(), 4) if len(data) > 1 else 0.0}
    run.save_metrics(metrics)
    worst = table["iou"].argsort().values[:4].tolist()
    mask_overlays(data.images[worst], data.masks[worst], (logits[worst] > 0).float(), run.plots / "worst_cases.png",
                  [f"{data.names[i]} IoU {scores['iou'][i]:.2f}" for i in worst])
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
