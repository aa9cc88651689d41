"""Requests/s and p50/p95 latency of the web service (core.serve) on the CPU, over loopback.

    python bench/serve.py                       # hw_classify at 224 px (a throwaway run)
    python bench/serve.py --run runs/hw_segment/<name> --size 256

Two measurements in one process, against a uvicorn server on 127.0.0.1 (a free port):
1. one request at a time, interleaved with the same prediction called directly in Python
   (decode + predict): the medians and their ratio are the cost of HTTP, multipart and JSON;
2. ``--requests`` requests, ``--concurrency`` at a time: requests/s, p50 and p95 latency.
Without ``--run`` a throwaway run is trained first (one batch, random-looking weights: speed
does not depend on them) of ``--homework`` at ``--size`` px. Prints one JSON line.

    python bench/serve.py --run RUN --screenshot docs/serve.png --image CASE.bmp [--viewport 1100x700]

measures nothing: it serves RUN, opens the page in Debian's chromium (Playwright), uploads
IMAGE, waits for the result and saves the viewport as a 256-colour PNG (the picture in the
docs: a UNet trained on the shared PH2 cases at 128 px, the held-out case IMD142).
"""
from __future__ import annotations

import argparse
import importlib
import io
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from core.predictor import load_predictor, open_image
from core.serve import create_app, running_server

THROWAWAY_RUNS = {  # the quickest run of each homework: one batch of built-in images
    "hw_classify": ["--arch", "mobilenet_v2", "--epochs", "1", "--limit-batches", "1", "--n-per-class", "8"],
    "hw_segment": ["--epochs", "1", "--limit-batches", "1", "--n-images", "24"],
}


def throwaway_run(homework: str, size: int, folder: Path) -> Path:
    run_dir = folder / homework
    train = importlib.import_module(f"{homework}.train")
    train.main([*THROWAWAY_RUNS[homework], "--size", str(size), "--run-dir", str(run_dir)])
    return run_dir


def test_image(size: int, seed: int = 0) -> bytes:
    """A smooth colour image with noise, size x size, as PNG bytes (like a photo, not a flat fill)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.5 + 0.4 * np.sin(6 * x + c) * np.cos(4 * y - c) for c in (0, 1, 2)], -1)
    pixels = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def screenshot(run_dir: Path, image: Path, out: Path, width: int, height: int) -> None:
    """The page over ``run_dir`` with ``image`` predicted, as seen in a ``width`` x ``height`` window."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--screenshot needs Debian's chromium (apt-get install chromium)")
    if not image.is_file():
        raise SystemExit(f"--image {image}: file not found")
    with running_server(create_app([load_predictor(run_dir)])) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url + "/")
            page.wait_for_selector("input[name=model]:checked", state="attached")
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#summary:not([data-kind='']):not([data-kind=error])", timeout=120_000)
            page.wait_for_timeout(500)  # the drop zone's fade back from its busy look
            shot = page.screenshot()
        finally:
            browser.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(io.BytesIO(shot)).convert("RGB").quantize(256).save(out, optimize=True)
    print(f"{out}: {width}x{height}, {out.stat().st_size / 1024:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="run folder to serve (default: a throwaway run)")
    parser.add_argument("--homework", default="hw_classify", choices=sorted(THROWAWAY_RUNS),
                        help="homework of the throwaway run")
    parser.add_argument("--size", type=int, default=224, help="side of the uploaded image and of the throwaway run")
    parser.add_argument("--requests", type=int, default=200, help="requests in the concurrent phase")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--pairs", type=int, default=30, help="interleaved direct/HTTP pairs, one at a time")
    parser.add_argument("--workers", type=int, default=2, help="the server's inference threads")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per inference")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="instead of measuring: save the page with --image predicted by --run to this PNG")
    parser.add_argument("--image", type=Path, default=None, help="the image for --screenshot")
    parser.add_argument("--viewport", default="1100x700", help="window size for --screenshot, WIDTHxHEIGHT")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.screenshot:
        if not (args.run and args.image):
            parser.error("--screenshot needs --run and --image")
        width, _, height = args.viewport.partition("x")
        if not (width.isdigit() and height.isdigit()):
            parser.error(f"--viewport {args.viewport}: expected WIDTHxHEIGHT, e.g. 1100x700")
        return screenshot(Path(args.run), args.image, args.screenshot, int(width), int(height))

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.run) if args.run else throwaway_run(args.homework, args.size, Path(tmp))
        predictor = load_predictor(run_dir)
        data = test_image(args.size)
        app = create_app([predictor], workers=args.workers)
        with running_server(app) as url, httpx.Client(base_url=url, timeout=120,
                                                     limits=httpx.Limits(max_connections=args.concurrency)) as client:
            def request() -> float:
                start = time.perf_counter()
                response = client.post(f"/predict/{predictor.name}", files={"file": ("bench.png", data)})
                response.raise_for_status()
                return time.perf_counter() - start

            def direct() -> float:
                start = time.perf_counter()
                predictor.predict(open_image(data))
                return time.perf_counter() - start

            for _ in range(3):  # warm-up
                request(), direct()
            pairs = [(direct(), request()) for _ in range(args.pairs)]
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                latencies = list(pool.map(lambda _: request(), range(args.requests)))
            wall = time.perf_counter() - start

    direct_ms = statistics.median(p[0] for p in pairs) * 1000
    http_ms = statistics.median(p[1] for p in pairs) * 1000
    print(json.dumps({
        "bench": "serve", "homework": predictor.homework, "kind": predictor.kind, "image_px": args.size,
        "model_input": predictor.info["input_size"], "device": "cpu", "torch_threads": args.threads,
        "workers": args.workers,
        "one_at_a_time": {"pairs": args.pairs, "direct_p50_ms": round(direct_ms, 2), "http_p50_ms": round(http_ms, 2),
                          "http_over_direct": round(http_ms / direct_ms, 3)},
        "concurrent": {"requests": args.requests, "concurrency": args.concurrency,
                       "requests_per_s": round(args.requests / wall, 2),
                       "p50_ms": round(percentile(latencies, 50) * 1000, 2),
                       "p95_ms": round(percentile(latencies, 95) * 1000, 2)},
    }))


if __name__ == "__main__":
    main()
