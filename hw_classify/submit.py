"""Write a Kaggle submission for the test images with one run, or an ensemble of runs.

    python -m hw_classify.submit --run RUN [RUN ...] [--data-dir DIR] [--tta]

The test folder and the columns follow the data's layout: Simpsons ``testset/testset/*.jpg``
-> ``Id,Expected``; cars ``test/*`` -> ``Id,Category``; an image folder's ``test/*`` ->
``Id,Expected``. Ids are the file names. With several runs their class probabilities are
averaged (an ensemble); each run's model is read by :func:`hw_classify.load_model`. The file
goes to ``--out``, by default the first run's folder as ``submission.csv``; when that file
exists, ``-2``, ``-3`` ... is added to its name (a submission is never overwritten). It is
validated first by :func:`core.submission.write_submission`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from core import cli
from core.data import load_image, resolve_data_root
from core.console import echo
from core.submission import write_submission

from .data import load_layout, make_shapes
from .predict import load_ensemble


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("hw_classify.submit", __doc__.split("\n")[0])
    parser.add_argument("--run", nargs="+", required=True, help="run folder(s); several: an ensemble")
    parser.add_argument("--data-dir", default=None, help="dataset root; default $DLS_DATA/simpsons, else built-in")
    parser.add_argument("--tta", action="store_true",
                        help="average four views of each image: whole and centre crop, each also mirrored")
    parser.add_argument("--out", default=None,
                        help="output CSV (default <first run>/submission.csv); an existing file is kept and "
                             "-2, -3 ... added to the new one's name")
    parser.add_argument("--batch-size", type=cli.positive_int, default=64, help="images per forward pass")
    parser.add_argument("--device", type=cli.device_name, default="auto", help="auto (cuda > mps > cpu), cpu, cuda, mps")
    return parser


def free_path(path: Path) -> Path:
    """``path``, or ``stem-2.csv``, ``stem-3.csv``, ... if it exists."""
    k = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return candidate


def test_images(args) -> tuple[list[str], list, tuple[str, str]]:
    """Ids, a way to read each image, and the submission columns of the data in use."""
    source = resolve_data_root("simpsons", args.data_dir, builtin="built-in generated shapes (test images)")
    if source.builtin:
        data = make_shapes(n_per_class=1)
        return [f.name for f in data.test_files], [Image.fromarray(a) for a in data.test_images], ("Id", "Expected")
    data = load_layout(source.root, need_test=True)
    return [f.name for f in data.test_files], data.test_files, (data.id_column, data.label_column)


def main(argv: list[str] | None = None) -> Path:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    predictor = load_ensemble(args.run, args.device, args.tta)
    ids, items, (id_column, label_column) = test_images(args)
    echo(f"predicting {len(ids)} test images with {len(args.run)} run(s){' and TTA (4 views)' if args.tta else ''}")
    labels = []
    for start in tqdm(range(0, len(items), args.batch_size), desc="predict", leave=False,
                      disable=len(items) <= args.batch_size):
        chunk = items[start:start + args.batch_size]
        images = [item if isinstance(item, Image.Image) else load_image(item, mode=None) for item in chunk]
        labels += [predictor.classes[i] for i in predictor.probabilities(images).argmax(1).tolist()]
    table = pd.DataFrame({id_column: ids, label_column: labels})
    out = free_path(Path(args.out) if args.out else Path(args.run[0]) / "submission.csv")
    write_submission(table, out, columns=[id_column, label_column], id_column=id_column, expected_ids=ids,
                     allowed_values=predictor.classes)
    counts = table[label_column].value_counts()
    echo(f"wrote {out}: {len(table)} rows; predicted " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return out


if __name__ == "__main__":
    cli.run_command(main)
