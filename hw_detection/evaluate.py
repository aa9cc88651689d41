"""Score a trained run (either backend) on every image of a hard-hat data set (no split).

    python -m hw_detection.evaluate --run runs/hw_detection/<name> --data-dir PATH/TO/hardhat

Writes ``metrics.json`` (``map50``, ``map``, per-class AP@0.5, precision, recall and F1 at IoU
0.5 for detections scoring at least ``--score-threshold``) and a figure of predicted vs true
boxes into ``--run-dir`` (default: ``<run>/eval-<data folder name>[-2 ...]``).
"""
from __future__ import annotations

from core import cli, runs
from core.data import resolve_data_root

from .data import load_voc, make_scenes
from .detector import load_detector, read_run_args
from .train import evaluate, write_figures


def main(argv: list[str] | None = None) -> dict:
    parser = cli.make_parser("hw_detection.evaluate", "Score a trained detection run on every image of a data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_detection.train")
    parser.add_argument("--data-dir", default=None, help="VOC root; default $DLS_DATA/hardhat, else built-in scenes")
    parser.add_argument("--n-images", type=cli.int_at_least(1), default=60,
                        help="number of built-in scenes when no data is found")
    parser.add_argument("--score-threshold", type=cli.probability, default=0.3,
                        help="detections scoring below this are not counted in precision/recall/F1 or drawn")
    parser.add_argument("--device", type=cli.device_name, default="cpu", help="auto, cpu, cuda, mps")
    cli.add_run_args(parser)
    args = cli.parse_args(parser, argv)
    train_args = read_run_args(args.run)
    detector = load_detector(args.run, args.device)
    source = resolve_data_root("hardhat", args.data_dir, builtin="built-in procedural helmet/head scenes")
    data = make_scenes(args.n_images, train_args["size"], seed=12345) if source.builtin else \
        load_voc(source.root, detector.class_names)
    print(f"model: CenterNet ({train_args.get('backend', 'torch')}) from {args.run}; "
          f"dataset: {data.description}: {data.report()}")
    name = source.root.name if source.root else "builtin"
    run = runs.RunDir.create("hw_detection", args, parent=args.run, prefix=f"eval-{name}-")  # or --run-dir
    metrics, arrays, predictions = evaluate(detector, data, args.score_threshold)
    metrics = {"images": len(data), **{k: round(v, 4) for k, v in metrics.items()}}
    run.save_metrics(metrics)
    write_figures(run, data, arrays, predictions, args.score_threshold, name="boxes.png")
    run.summary(metrics)
    return metrics


if __name__ == "__main__":
    cli.run_command(main)
