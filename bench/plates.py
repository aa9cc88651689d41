"""Speed of hw_plates on this machine: one JSON line.

    python bench/plates.py [--run runs/hw_plates/<name>] [--crops 128] [--photos 16] [--repeats 5]

* ``reader_crops_per_s``: plate crops read per second by the reader (one CRNN, or a run's
  ensemble of readers: all of them read each crop) with greedy decoding, with greedy
  decoding and the plate formats (``hw_plates.formats``: the run's, or without a run or with a
  run that has none, the shapes of the crops' texts at weight 0.7), and with prefix beam search
  (``--beam-width``, default 8), batches of 64, the network's forward included;
  ``beam_over_greedy`` and ``formats_over_greedy`` are the ratios of their times.
* ``photos_per_s``: photos read end to end (detector at the run's size, its boxes refined by
  the run's refiner, or an untrained one for two rounds without a run, plates cut with the
  run's margin in the run's views (five without a run), reader with greedy decoding), one photo at a time as
  ``predict`` does, with the formats and without (``photos_formats_over_plain``: the ratio of
  their times).

With ``--run`` the run's trained models are timed (beam search is faster on a confident
model: fewer symbols pass its pruning); without it, untrained ones of the default sizes.
Crops and photos come from ``$DLS_DATA/plates`` when it exists, else rendered plates. The
configurations take turns repeat by repeat, so a change in the machine's load hits them alike;
each figure is the median of ``--repeats``, and ``spread`` ((max - min) / median) says how
noisy they were.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from hw_plates.data import load_crops, load_photos, make_rendered_plates, to_input
from hw_plates.formats import PlateFormats
from hw_plates.models import CRNN, PlateNet, load_model
from hw_plates.predict import read_photo
from hw_plates.refine import BoxRefiner
from hw_plates.task import FIVE_VIEWS, read_crops
from hw_plates.text import Alphabet


def load_models(run: str | None):
    if run:
        loaded = load_model(run)
        reader = loaded.model.require("reader", "bench/plates.py")
        if loaded.model.detector is not None:
            return reader, loaded.model.detector, loaded.extras["detection"], loaded.model.refiner
        return reader, PlateNet().eval(), {"size": 384, "margin": 0.0, "score_threshold": 0.3, "flip": True}, None
    return (CRNN(Alphabet(), channels=16).eval(), PlateNet().eval(),
            {"size": 384, "margin": 0.0, "score_threshold": 0.3, "flip": True, "refine_rounds": 2,
             "views": [list(view) for view in FIVE_VIEWS]},
            BoxRefiner().eval())


def load_inputs(reader: CRNN, n_crops: int, n_photos: int):
    height, width = reader.input_size
    root = Path(os.environ.get("DLS_DATA", "")) / "plates"
    if os.environ.get("DLS_DATA") and root.is_dir():
        crops = load_crops(root, reader.alphabet, height, width)
        photos = [p.load() for p in load_photos(root)[:n_photos]]
        source = str(root)
    else:
        crops, scenes = make_rendered_plates(n_crops, n_photos, reader.alphabet, height, width, seed=0)
        photos, source = [p.image for p in scenes], "rendered plates"
    images = torch.stack([to_input(image) for image in crops.images[:n_crops]])
    return images, photos, source, crops.texts


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a hw_plates.train run folder (default: untrained models)")
    parser.add_argument("--crops", type=int, default=128)
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--beam-width", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    reader, detector, config, refiner = load_models(args.run)
    crops, photos, source, texts = load_inputs(reader, args.crops, args.photos)
    formats = reader.formats if reader.formats is not None and reader.formats.active else \
        PlateFormats.from_texts(texts, weight=0.7)

    def plain(job):
        def run():
            reader.formats = None
            try:
                return job()
            finally:
                reader.formats = formats
        return run

    reader.formats = formats
    photos_job = lambda: [read_photo(photo, reader, detector, config, refiner=refiner) for photo in photos]
    jobs = {
        "greedy": plain(lambda: read_crops(reader, crops, beam_width=1)),
        "formats": lambda: read_crops(reader, crops, beam_width=1),
        "beam": plain(lambda: read_crops(reader, crops, beam_width=args.beam_width)),
        "photos": photos_job,
        "photos_plain": plain(photos_job),
    }
    jobs["greedy"]()  # warm-up
    times = {name: [] for name in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            times[name].append(timed(job))
    median = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "models": args.run or "untrained", "data": source, "threads": torch.get_num_threads(),
        "crops": len(crops), "photos": len(photos), "beam_width": args.beam_width,
        "formats": {"shapes": len(formats.counts), "weight": formats.weight},
        "reader_crops_per_s": {name: round(len(crops) / median[name], 1) for name in ("greedy", "formats", "beam")},
        "beam_over_greedy": round(median["beam"] / median["greedy"], 2),
        "formats_over_greedy": round(median["formats"] / median["greedy"], 2),
        "photos_per_s": {"formats": round(len(photos) / median["photos"], 2),
                         "plain": round(len(photos) / median["photos_plain"], 2)},
        "photos_formats_over_plain": round(median["photos"] / median["photos_plain"], 2),
        "spread": {name: round((max(t) - min(t)) / median[name], 2) for name, t in times.items()},
    }))


if __name__ == "__main__":
    main()
