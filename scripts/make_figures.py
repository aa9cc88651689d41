"""Make the documentation's figures from short training runs on the real data.

    DLS_DATA=/path/to/shared/data python scripts/make_figures.py            # every homework
    DLS_DATA=... python scripts/make_figures.py --only segment,gan          # some of them
    python scripts/make_figures.py --list                                   # the jobs and their commands

Each job runs the homework's own commands (``python -m hw_<name>.train ...``, then ``explore``,
``evaluate`` or ``predict`` where the figure comes from them) into ``--runs`` (default
``runs/figures/<job>``, outside the repository's tracked files: ``runs/`` is ignored), one
after the other, each training held to ``--minutes`` (3 by default) by ``--time-limit`` or a
fixed number of epochs, with ``--threads`` PyTorch threads (1 by default). It then copies the
plots the runs wrote into ``--out`` (default ``docs/figures``), resized to at most
``--max-width`` pixels and optimised to stay under ``--max-kb`` (JPEG for photographs, PNG for
charts, as each figure's name in ``JOBS`` says), and records in ``--out/figures.json`` each
job's commands, wall times and the run's ``metrics.json``, which the pages quote beside the
pictures (``docs/hooks/site.py``). ``--copy-only`` copies the figures again from the runs
already made, without training.

A job whose data is missing stops the script with the folder it looked for (``DLS_DATA`` must
be set: the figures are of the real data). A failed command stops it with the command and its
exit status; the figures of the jobs already done stay in place.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MAX_KB = 300
MAX_TOTAL_MB = 15


@dataclass
class Job:
    """One homework's figures: the commands to run (``{run}``, ``{data}``, ``{minutes}`` and
    ``{threads}`` filled in; each a ``python -m`` module and its arguments) and the files to
    copy, ``(path inside the run folder, name in the figures folder)``."""

    name: str
    data: str                      # the folder under $DLS_DATA the job needs
    commands: list[list[str]]
    figures: list[tuple[str, str]]
    extra: callable = None         # after the commands: run folder -> [(a figure it drew, its name)]
    notes: dict = field(default_factory=dict)
    metrics: list[tuple[str, str]] = field(default_factory=lambda: [("metrics.json", "")])  # (file, key prefix)


def train(module: str, *args: str) -> list[str]:
    return [module, "--run-dir", "{run}", "--threads", "{threads}", *args]


def plates_predict_args(run: Path, data: Path, n: int = 3) -> list[str]:
    """The first ``n`` held-out (test) photos of the shared plates, for ``hw_plates.predict``."""
    sys.path.insert(0, str(ROOT))
    from hw_plates.data import split_of

    photos = json.loads((data / "plates" / "detection" / "annotations.json").read_text())
    chosen = [p for p in photos if split_of(p["plates"][0]["text"]) == "test"][:n]
    return [str(data / "plates" / "detection" / "images" / p["file"]) for p in chosen]


def side_by_side(images: list, path: Path, gap: int = 8) -> None:
    """``images`` (PIL, RGB) in one row, top-aligned, ``gap`` white pixels apart, saved at ``path``."""
    strip = Image.new("RGB", (sum(im.width for im in images) + gap * (len(images) - 1),
                              max(im.height for im in images)), "white")
    x = 0
    for im in images:
        strip.paste(im, (x, 0))
        x += im.width + gap
    strip.save(path)


def epoch_number(path: Path) -> int:
    """``epoch_0042.png`` -> 42 (the number, so that epoch 1000 sorts after epoch 999)."""
    return int(path.stem.rsplit("_", 1)[1])


def gan_progress(run: Path, columns: int = 4) -> list[tuple[Path, str]]:
    """A strip of the GAN's fixed-noise grids at evenly spaced epochs (first to last)."""
    frames = sorted((run / "plots" / "samples").glob("epoch_*.png"), key=epoch_number)
    if not frames:
        raise SystemExit(f"error: {run / 'plots' / 'samples'}: no epoch grids (did hw_gan.train change?)")
    picks = sorted({round(i * (len(frames) - 1) / (columns - 1)) for i in range(columns)})
    side_by_side([Image.open(frames[i]).convert("RGB") for i in picks], run / "plots" / "gan_progress.png")
    return [(run / "plots" / "gan_progress.png", "gan_progress.png")]


def plates_read(run: Path) -> list[tuple[Path, str]]:
    """The photos ``hw_plates.predict`` drew (plate box and the text read), side by side."""
    pictures = sorted(p for p in (run / "predict").glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not pictures:
        raise SystemExit(f"error: {run / 'predict'}: hw_plates.predict drew no picture")
    images = [Image.open(p).convert("RGB") for p in pictures]
    height = 360
    side_by_side([im.resize((round(im.width * height / im.height), height)) for im in images],
                 run / "plots" / "plates_read.png")
    return [(run / "plots" / "plates_read.png", "plates_read.jpg")]


JOBS = [
    Job("knn", "", [["hw_knn.train", "--run-dir", "{run}"]],
        [("plots/knn_grid.png", "knn_grid.png"), ("plots/class_frequencies.png", "knn_class_frequencies.png")],
        notes={"data": "scikit-learn's digits (the forest CSV is not among the shared subsets)"}),
    Job("logreg", "mnist", [["hw_logreg.train", "--run-dir", "{run}"]],
        [("plots/descent.png", "logreg_descent.png"), ("plots/blobs_loss.png", "logreg_blobs_loss.png"),
         ("plots/blobs_boundary.png", "logreg_blobs_boundary.png")]),
    Job("churn", "churn", [["hw_churn.train", "--quick", "--run-dir", "{run}"]],
        [("plots/numeric_by_target.png", "churn_numeric_by_target.png"),
         ("plots/categorical_counts.png", "churn_categorical_counts.png"),
         ("plots/target_balance.png", "churn_target_balance.png")]),
    Job("classify", "simpsons", [train("hw_classify.train", "--weights", "none", "--time-limit", "{minutes}")],
        [("plots/history.png", "classify_history.png"), ("plots/confusion_matrix.png", "classify_confusion_matrix.png"),
         ("plots/worst_mistakes.png", "classify_worst_mistakes.jpg")]),
    Job("segment", "ph2", [train("hw_segment.train", "--size", "128", "--time-limit", "{minutes}")],
        [("plots/history.png", "segment_history.png"), ("plots/predictions.png", "segment_predictions.jpg")]),
    Job("ae", "faces", [train("hw_autoencoder.train", "--model", "ae", "--time-limit", "{minutes}"),
                        ["hw_autoencoder.explore", "--run", "{run}", "--smile"]],
        [("plots/reconstructions.png", "ae_reconstructions.jpg"),
         ("plots/samples.png", "ae_samples.jpg"), ("explore/smile.png", "ae_smile.jpg")]),
    Job("vae", "mnist", [train("hw_autoencoder.train", "--model", "vae", "--time-limit", "{half}"),
                         ["hw_autoencoder.explore", "--run", "{run}", "--tsne"]],
        [("plots/reconstructions.png", "vae_reconstructions.png"), ("plots/samples.png", "vae_samples.png"),
         ("explore/tsne.png", "vae_tsne.png")]),
    Job("cvae", "mnist", [train("hw_autoencoder.train", "--model", "cvae", "--time-limit", "{half}"),
                          ["hw_autoencoder.explore", "--run", "{run}", "--digit", "7"]],
        [("plots/samples.png", "cvae_samples.png"), ("explore/digit-7.png", "cvae_digit7.png")]),
    # the GAN's default command as it is (its own 15-minute budget), scored with the baseline
    Job("gan", "faces/lfw_gan", [train("hw_gan.train"),
                                 ["hw_gan.evaluate", "--run", "{run}", "--run-dir", "{run}/eval", "--baseline"]],
        [("plots/history.png", "gan_history.png"), ("plots/samples/LAST", "gan_samples.png"),
         ("eval/plots/tsne.png", "gan_tsne.png"), ("eval/plots/nearest_training.png", "gan_nearest_training.png"),
         ("eval/plots/pca_gaussian.png", "gan_pca_gaussian.png")],
        extra=gan_progress,
        metrics=[("metrics.json", ""), ("eval/metrics.json", "eval_")]),
    # the detection and plates homeworks' default commands as they are (their own budgets)
    Job("detection", "hardhat", [train("hw_detection.train")],
        [("plots/history.png", "detection_history.png"), ("plots/predictions.png", "detection_predictions.jpg")]),
    Job("plates", "plates", [train("hw_plates.train", "--stage", "both"),
                             ["hw_plates.predict", "--run", "{run}", "--out", "{run}/predict", "{plates_photos}"]],
        [("plots/reader_history.png", "plates_reader_history.png"),
         ("plots/worst_readings.png", "plates_worst_readings.jpg"), ("plots/worst_photos.png", "plates_worst_photos.jpg")],
        extra=plates_read),
]


def fill(argv: list[str], values: dict) -> list[str]:
    filled = []
    for arg in argv:
        if arg == "{plates_photos}":
            filled += values["plates_photos"]
        else:
            filled.append(arg.format(**{k: v for k, v in values.items() if k != "plates_photos"}))
    return filled


def optimise(source: Path, target: Path, max_width: int, max_kb: int) -> Path:
    """Copy ``source`` to ``target``, at most ``max_width`` wide and ``max_kb`` large, in the
    format ``target``'s suffix names: a JPEG (photographs: quality lowered step by step until it
    fits) or an optimised PNG (charts; quantised to 256 colours when it has few colours, else
    scaled down, until it fits). Returns ``target``."""
    image = Image.open(source)
    image.load()
    translucent = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if translucent else "RGB")
    if translucent and image.getchannel("A").getextrema()[0] == 255:  # matplotlib's opaque RGBA
        image = image.convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    fits = lambda: target.stat().st_size <= max_kb * 1024  # noqa: E731
    if target.suffix.lower() in (".jpg", ".jpeg"):
        for quality in (88, 82, 75, 65):
            image.convert("RGB").save(target, quality=quality, optimize=True, progressive=True)
            if fits():
                return target
        raise SystemExit(f"error: {source}: no JPEG of it fits in {max_kb} KB at {image.width} px wide")
    image.save(target, optimize=True)
    if fits():
        return target
    if image.getcolors(maxcolors=4096) is not None:  # a chart: 256 colours lose nothing visible
        image.quantize(256, method=Image.Quantize.FASTOCTREE if image.mode == "RGBA" else Image.Quantize.MEDIANCUT,
                       dither=Image.Dither.NONE).save(target, optimize=True)
        if fits():
            return target
    while not fits():
        if image.width < 300:
            raise SystemExit(f"error: {source}: no PNG of it fits in {max_kb} KB (name it .jpg in JOBS)")
        image = image.resize((round(image.width * 0.85), round(image.height * 0.85)), Image.LANCZOS)
        image.save(target, optimize=True)
    return target


def run_job(job: Job, args, data: Path, env: dict, previous: dict | None = None) -> dict:
    """Run the job's commands (unless ``args.copy_only``: then the runs already in ``--runs``
    are used and ``previous``, the job's record in the manifest, keeps their commands and
    times), copy its figures, and return its record for ``figures.json``."""
    run = Path(args.runs) / job.name
    if args.copy_only:
        if previous is None or not run.is_dir():
            raise SystemExit(f"error: --copy-only: {run} or its record in figures.json is missing: run the job")
        return copy_figures(job, run, Path(args.out), args, {"commands": previous["commands"],
                                                            "seconds": previous["seconds"]})
    if run.exists():
        shutil.rmtree(run)
    run.parent.mkdir(parents=True, exist_ok=True)
    values = {"run": str(run), "threads": str(args.threads), "minutes": f"{args.minutes:g}",
              "half": f"{args.minutes * 2 / 3:g}", "plates_photos": []}
    if job.name == "plates":
        values["plates_photos"] = plates_predict_args(run, data)
    record = {"commands": [], "seconds": []}
    for argv in job.commands:
        argv = fill(argv, values)
        command = [sys.executable, "-m", *argv]
        shown = "python -m " + " ".join(argv).replace(str(data), "$DLS_DATA")
        print(f"== {job.name}: {shown}", flush=True)
        start = time.monotonic()
        result = subprocess.run(command, cwd=ROOT, env=env)
        if result.returncode != 0:
            raise SystemExit(f"error: {shown}: exit status {result.returncode}")
        record["commands"].append(shown.replace(str(run), f"runs/figures/{job.name}"))
        record["seconds"].append(round(time.monotonic() - start, 1))
    return copy_figures(job, run, Path(args.out), args, record)


def copy_figures(job: Job, run: Path, out: Path, args, record: dict) -> dict:
    """Copy and optimise the job's figures from ``run`` into ``out``; add the run's metrics and
    the figures' names to ``record``."""
    written = []
    for inside, name in job.figures:
        source = run / inside
        if inside.endswith("/LAST"):
            candidates = sorted(source.parent.glob("epoch_*.png"), key=epoch_number) or sorted(source.parent.glob("*.png"))
            source = candidates[-1] if candidates else source
        if not source.is_file():
            raise SystemExit(f"error: {source}: the run wrote no such figure")
        written.append(optimise(source, out / name, args.max_width, args.max_kb).name)
    if job.extra is not None:
        for source, name in job.extra(run):
            written.append(optimise(source, out / name, args.max_width, args.max_kb).name)
    record["metrics"] = {}
    for name, prefix in job.metrics:
        if (run / name).is_file():
            record["metrics"].update({prefix + k: v for k, v in json.loads((run / name).read_text()).items()})
    record["figures"] = written
    record.update(job.notes)
    return record


def check_sizes(out: Path, max_kb: int) -> None:
    files = [p for p in out.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif")]
    big = [f"{p.name} ({p.stat().st_size // 1024} KB)" for p in files if p.stat().st_size > max_kb * 1024]
    total = sum(p.stat().st_size for p in files)
    if big:
        raise SystemExit(f"error: {out}: figures over {max_kb} KB: {', '.join(big)}")
    if total > MAX_TOTAL_MB * 1024 * 1024:
        raise SystemExit(f"error: {out}: the figures add up to {total / 1e6:.1f} MB, over {MAX_TOTAL_MB} MB")
    print(f"{len(files)} figures in {out}, {total / 1e6:.2f} MB in all, the largest "
          f"{max(p.stat().st_size for p in files) // 1024} KB")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/make_figures.py", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated jobs: " + ",".join(j.name for j in JOBS))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "figures"), help="where the runs go")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="where the figures go")
    parser.add_argument("--minutes", type=float, default=3.0, help="time budget of each training (--time-limit)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads of each command")
    parser.add_argument("--max-width", type=int, default=1100, help="figures wider than this are scaled down")
    parser.add_argument("--max-kb", type=int, default=MAX_KB, help="largest size of one figure file")
    parser.add_argument("--list", action="store_true", help="print the jobs' commands and exit")
    parser.add_argument("--copy-only", action="store_true",
                        help="run nothing: copy the figures again from the runs already in --runs")
    args = parser.parse_args(argv)
    jobs = JOBS
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {j.name for j in JOBS})
        if unknown:
            parser.error(f"--only: unknown job(s) {', '.join(unknown)}; known: {', '.join(j.name for j in JOBS)}")
        jobs = [j for j in JOBS if j.name in names]
    if args.list:
        for job in jobs:
            for command in job.commands:
                print(f"{job.name}: python -m {' '.join(command)}")
        return
    if not os.environ.get("DLS_DATA"):
        parser.error("DLS_DATA is not set: the figures are made from the real data subsets")
    data = Path(os.environ["DLS_DATA"]).resolve()
    for job in jobs:
        if job.data and not (data / job.data).is_dir():
            parser.error(f"{job.name}: {data / job.data}: folder not found (DLS_DATA holds the data subsets)")
    env = {**os.environ, "DLS_DATA": str(data), "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "figures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    for job in jobs:
        manifest[job.name] = run_job(job, args, data, env, manifest.get(job.name))
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    check_sizes(out, args.max_kb)


if __name__ == "__main__":
    main()
