"""Score a trained run on every case of a data set (no split), e.g. a model trained on the
built-in images scored on real PH2, or a PH2 model on another PH2 copy.

    python -m hw_segment.evaluate --run runs/hw_segment/<name> --data-dir PATH/TO/PH2

The model comes from the run's ``model.pt`` (:func:`hw_segment.load_model`); images are
resized to the size it was trained at. Writes ``metrics.json`` (mean IoU, Dice and course
score over the cases), ``per_case.csv`` and a figure of the worst cases into ``--run-dir``
(default: a new folder ``<run>/eval-<data folder name>-<timestamp>``).
"""
from __future__ import annotations

import pandas as pd

from core import cli, runs
from core.data import resolve_data_root
from core.device import pick_device
from core.inference import model_outputs
from core.plots import mask_overlays

from .data import load_ph2, make_lesions
from .models import load_model
from .task import score_logits


def main(argv: list[str] | None = None) -> dict:
    parser = cli.make_parser("hw_segment.evaluate", "Score a trained segmentation run on every case of a data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_segment.train")
    parser.add_argument("--data-dir", default=None, help="PH2 root; default $DLS_DATA/ph2, else built-in images")
    parser.add_argument("--n-images", type=cli.positive_int, default=100,
                        help="number of built-in images when no data is found")
    parser.add_argument("--device", type=cli.device_name, default="auto", help="auto, cpu, cuda, mps")
    cli.add_run_args(parser, default="<run>/eval-<data folder name>-<timestamp>")
    args = cli.parse_args(parser, argv)
    loaded = load_model(args.run)
    model, size, threshold = loaded.model, loaded.config["size"], loaded.extras["threshold"]
    source = resolve_data_root("ph2", args.data_dir, builtin="built-in procedural lesion images")
    data = make_lesions(args.n_images, size, seed=12345) if source.builtin else load_ph2(source.root, size)
    print(f"model: {loaded.config['model']} (width {loaded.config['width']}, {size} px) from {args.run}; "
          f"data: {data.description}")
    # a new folder per evaluation: two data folders with the same name never share one
    run = runs.RunDir.create("hw_segment", args, parent=args.run,
                            prefix=f"eval-{source.root.name if source.root else 'builtin'}-")

    device = pick_device(args.device)
    logits = model_outputs(model.to(device), data.images, device=device) - threshold  # lesion where > 0
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
