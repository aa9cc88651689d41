"""Score a trained run (either backend) on every image of a hard-hat data set (no split).

    python -m hw_detection.evaluate --run runs/hw_detection/<name> --data-dir PATH/TO/hardhat

Writes ``metrics.json`` (``map50``, ``map``, per-class AP@0.5, precision, recall and F1 at IoU
0.5 for detections scoring at least ``--score-threshold``) and a figure of predicted vs true
boxes (``plots/boxes.png``) into ``--run-dir`` (default: ``<run>/eval-<data>-<timestamp>``,
``<data>`` the data folder's name or ``builtin``; a fresh folder each time).
"""
from __future__ import annotations

from core import cli, runs

from .data import find_data, read_data
from .models import load_model, loaded_detector
from .train import evaluate, write_figures

OUTPUTS = "<run>/eval-<data folder name or builtin>-<timestamp>"


def main(argv: list[str] | None = None) -> dict:
    parser = cli.make_parser("hw_detection.evaluate", "Score a trained detection run on every image of a data set.")
    parser.add_argument("--run", required=True, help="run folder written by hw_detection.train")
    parser.add_argument("--data-dir", default=None, help="VOC root; default $DLS_DATA/hardhat, else built-in scenes")
    parser.add_argument("--n-images", type=cli.int_at_least(1), default=60,
                        help="number of built-in scenes when no data is found")
    parser.add_argument("--score-threshold", type=cli.probability, default=0.3,
                        help="detections scoring below this are not counted in precision/recall/F1 or drawn")
    parser.add_argument("--device", type=cli.device_name, default="cpu", help="auto, cpu, cuda, mps")
    cli.add_run_args(parser, default=OUTPUTS)
    args = cli.parse_args(parser, argv)
    loaded = load_model(args.run)
    detector = loaded_detector(loaded, args.device)
    source = find_data(args.data_dir)
    data = read_data(source, detector.class_names, args.n_images, detector.size, seed=12345)
    print(f"model: CenterNet ({loaded.config['backend']}) from {args.run}; "
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
