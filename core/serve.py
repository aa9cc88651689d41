"""A web page and an HTTP API over trained runs of the image homeworks.

    python -m core.serve --run runs/hw_segment/<name> [--run runs/hw_classify/<name> ...]

prints the address (http://127.0.0.1:8000 by default). The page (``core/static``) lists the
models by homework, run name and headline metric, with a badge on a dry run or a run of very
few epochs; one drops or picks an image (or, for a generator, a seed) and sees the result: the
top-5 classes as bars, the mask over the image (its opacity on a slider) with its area, the
boxes with class and score, or a grid of samples. The result downloads as JSON and as a PNG.
While a model works, a spinner shows and the drop zone takes no new image; an error shows in
the result panel. The page fits screens down to 360 px wide. The API:

    GET  /models                  the models: name (the key in URLs), homework, kind, classes,
                                  input size, metrics, and ``display`` (see :func:`display`)
    GET  /health                  {"status": "ok", "models": N}
    POST /predict/<model>         multipart field ``file`` (the image); generators: form fields
                                  ``seed`` and ``count``. Answers the result of
                                  :mod:`core.predictor` (the same as ``python -m hw_x.predict``)
    GET  /docs, /openapi.json     OpenAPI documentation of every answer of each path

Each ``--run`` is loaded once at start (:func:`core.predictor.load_predictor`, weights-only);
inference runs in a thread pool, one image per call, so the server keeps answering while a
model works. Errors are JSON ``{"error": "..."}`` with a 4xx status: 404 unknown model, 405 a
method the path does not answer (with the ``Allow`` header), 413 upload or image too large,
415 not an image, 400 truncated or corrupt image (or malformed multipart), 422 a missing or bad
field or an image the homework refuses; 500 (JSON too) for a fault, logged by the server. The
OpenAPI schema documents each of these per path, with the shapes of the answers.
Uploads are held in memory (never written to disk, never under a name from the request) up
to ``--max-upload-mb``; images are decoded only below ``--max-pixels``. The server binds to
127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Sequence, Union

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from . import cli
from .errors import UserError
from .predictor import MAX_PIXELS, ImageError, Predictor, load_predictor, open_image
from .runs import read_args

STATIC = Path(__file__).with_name("static")
ASSETS = {  # the page's files: URL path -> (file in core/static, media type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.ico", "image/x-icon"),
}
MB = 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, headers and small form fields around the file
IMAGE_ERROR_STATUS = {"not_image": 415, "truncated": 400, "too_large": 413}


class ServeError(HTTPException):
    """A 4xx answer: ``{"error": message}``."""


# -- how the page names a model -------------------------------------------------------------------
HOMEWORK_TITLES = {"hw_classify": "Classification", "hw_segment": "Segmentation", "hw_detection": "Detection",
                   "hw_plates": "Plate reading", "hw_gan": "GAN", "hw_autoencoder": "Autoencoder"}
HEADLINE_METRICS = (  # the first of these a run has is its headline: (key, short label)
    ("test_iou", "IoU"), ("val_iou", "IoU"), ("val_accuracy", "accuracy"), ("test_accuracy", "accuracy"),
    ("val_f1_macro", "F1 macro"), ("map50", "mAP@50"), ("test_map50", "mAP@50"), ("val_map50", "mAP@50"),
    ("test_e2e_exact", "exact reads"), ("test_exact", "exact reads"), ("test_nelbo", "NELBO"),
    ("test_mse", "MSE"))
FEW_EPOCHS = 2  # a run of at most this many epochs gets a badge
METRIC_WORDS = {"iou": "IoU", "dice": "Dice", "acc": "accuracy", "f1": "F1", "map": "mAP", "map50": "mAP@50",
                "ap": "AP", "ap50": "AP@50", "mse": "MSE", "nelbo": "NELBO", "kl": "KL", "rec": "reconstruction",
                "cer": "CER", "e2e": "end-to-end", "auc": "AUC", "cv": "CV", "pca": "PCA", "fid": "FID",
                "loo": "leave-one-out", "1nn": "1-NN", "lr": "learning rate", "d": "D", "g": "G"}
METRIC_QUALIFIERS = {"std": "std", "sd": "std", "tta": "TTA", "worst": "worst", "spread": "spread"}
QUALITY = re.compile(r"(^|_)(iou|dice|acc|accuracy|f1|map|map50|exact|cer|levenshtein|nelbo|mse|auc|fid|1nn|"
                     r"loss|score|kl|rec|recognised)(_|$)")
FRACTIONS = re.compile(r"(^|_)(iou|dice|acc|accuracy|f1|map|map50|exact)(_|$)")


def metric_label(key: str) -> str:
    """A metric's name as people read it: ``val_iou_std`` -> ``val IoU (std)``, ``map50`` ->
    ``mAP@50``, ``loo_1nn_accuracy`` -> ``leave-one-out 1-NN accuracy``; words it does not
    know stay as they are (``_`` becomes a space)."""
    words, qualifiers = [], []
    for word in key.split("_"):
        if not word:
            continue
        if word in METRIC_QUALIFIERS and words:
            qualifiers.append(METRIC_QUALIFIERS[word])
        else:
            words.append(METRIC_WORDS.get(word, word))
    label = " ".join(words) or key
    return f"{label} ({', '.join(qualifiers)})" if qualifiers else label


def format_metric(key: str, value: float) -> str:
    """A metric's value in a few characters: scores in [0, 1] (IoU, accuracy, mAP...) with two
    decimals, integers as they are, anything else with four significant digits."""
    if isinstance(value, int):
        return str(value)
    if 0 <= value <= 1 and FRACTIONS.search(key):
        return f"{value:.2f}"
    return f"{value:.4g}"


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity (in lists and dicts too) replaced by None: JSON has
    no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def trained_epochs(run: Path, metrics: dict, settings: dict) -> int | None:
    """The epochs a run trained: ``epochs`` in its metrics.json, else the rows of its
    history.csv, else the fewest of its metrics' ``*_epochs`` (a run of several stages), else
    ``epochs`` in its args.json (what was asked); None if none of these says."""
    def count(value):
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    if count(metrics.get("epochs")) is not None:
        return metrics["epochs"]
    history = run / "history.csv"
    if history.is_file():
        rows = sum(1 for line in history.read_text(errors="replace").splitlines()[1:] if line.strip())
        if rows:
            return rows
    stages = [count(v) for k, v in metrics.items() if k.endswith("_epochs") and count(v) is not None]
    if stages:
        return min(stages)
    return count(settings.get("epochs"))


def display(predictor: Predictor) -> dict:
    """How the page shows a model (the ``display`` entry of ``GET /models``)::

        {"title": "Segmentation · lesions · IoU 0.55",   # homework · run name · headline metric
         "homework_title": "Segmentation",
         "headline": {"key": "test_iou", "label": "test IoU", "value": 0.55, "text": "IoU 0.55"} or None,
         "epochs": 8 or None, "dry_run": false,
         "badges": [{"text": "1 epoch", "title": "why the badge"}],   # dry run, or <= FEW_EPOCHS epochs
         "metrics": [{"key", "label", "value", "main"}]}              # every finite number, readable name

    ``main`` marks the quality metrics (IoU, accuracy, losses...) other than per-class ones.
    The run's settings come from its args.json (``dry_run``), its epochs from
    :func:`trained_epochs`.
    """
    metrics = predictor.info.get("metrics") or {}
    try:
        settings = read_args(predictor.run_dir)
    except UserError:
        settings = {}
    numbers = {k: v for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    homework_title = HOMEWORK_TITLES.get(predictor.homework,
                                         predictor.homework.removeprefix("hw_").replace("_", " ").capitalize())
    headline = next(({"key": key, "label": metric_label(key), "value": numbers[key],
                      "text": f"{short} {format_metric(key, numbers[key])}"}
                     for key, short in HEADLINE_METRICS if key in numbers), None)
    epochs = trained_epochs(predictor.run_dir, metrics, settings)
    dry_run = settings.get("dry_run") is True
    badges = []
    if dry_run:
        badges.append({"text": "dry run", "title": "trained with --dry-run (one epoch of two batches, to check the "
                                                   "pipeline): its predictions mean little"})
    elif epochs is not None and epochs <= FEW_EPOCHS:
        badges.append({"text": f"{epochs} epoch{'s' if epochs != 1 else ''}",
                       "title": f"trained for {epochs} epoch{'s' if epochs != 1 else ''} only: its predictions "
                                "may be poor"})
    classes = {re.sub(r"[^a-z0-9]+", "_", str(c).lower()).strip("_") for c in predictor.info.get("classes", [])}
    per_class = re.compile(r".*_(" + "|".join(map(re.escape, sorted(classes - {""}))) + ")$") if classes - {""} else None
    shown = [{"key": k, "label": metric_label(k), "value": v,
              "main": bool(QUALITY.search(k)) and not (per_class and per_class.fullmatch(k))}
             for k, v in numbers.items()]
    title = " · ".join([homework_title, predictor.name, *([headline["text"]] if headline else [])])
    return {"title": title, "homework_title": homework_title, "headline": headline, "epochs": epochs,
            "dry_run": dry_run, "badges": badges, "metrics": shown}


# -- the answers, as the OpenAPI schema documents them --------------------------------------------
class ErrorAnswer(BaseModel):
    """Every answer other than 200."""
    error: str = Field(description="what is wrong, in one line")


class Health(BaseModel):
    status: Literal["ok"]
    models: int = Field(description="number of models served")


class Badge(BaseModel):
    text: str = Field(description='"dry run", or "N epoch(s)" for a run of very few epochs')
    title: str = Field(description="why the badge, in a sentence")


class Metric(BaseModel):
    key: str = Field(description="the name in metrics.json")
    label: str = Field(description="the name as people read it")
    value: float
    main: bool = Field(description="a quality metric (not per class, not bookkeeping)")


class Headline(BaseModel):
    key: str
    label: str
    value: float
    text: str = Field(description='short label and value, e.g. "IoU 0.97"')


class Display(BaseModel):
    title: str = Field(description='homework · run name · headline metric, e.g. "Segmentation · lesions · IoU 0.97"')
    homework_title: str
    headline: Headline | None
    epochs: int | None = Field(description="epochs trained (None if the run does not say)")
    dry_run: bool
    badges: list[Badge]
    metrics: list[Metric]


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # homework-specific entries, e.g. "model": "unet"
    name: str = Field(description="the model's key in /predict/<name>: its run folder's name, made unique")
    homework: str
    kind: Literal["classification", "segmentation", "detection", "generation"]
    classes: list[str]
    input_size: list[int] | None
    metrics: dict[str, Any] = Field(description="the run's metrics.json (NaN and infinities as null)")
    display: Display


class ModelList(BaseModel):
    models: list[ModelInfo]


class ClassProbability(BaseModel):
    label: str
    probability: float


class Classification(BaseModel):
    kind: Literal["classification"]
    label: str
    probability: float
    classes: list[ClassProbability] = Field(description="every class, most likely first")


class Segmentation(BaseModel):
    kind: Literal["segmentation"]
    width: int
    height: int
    area: int = Field(description="mask area in pixels")
    area_fraction: float
    mask_png: str = Field(description="the mask at the image's size, base64 8-bit PNG (255 = foreground)")


class Box(BaseModel):
    label: str
    score: float
    box: list[float] = Field(min_length=4, max_length=4, description="x_min, y_min, x_max, y_max in pixels")


class Detection(BaseModel):
    kind: Literal["detection"]
    width: int
    height: int
    boxes: list[Box] = Field(description="highest score first")


class Generation(BaseModel):
    kind: Literal["generation"]
    seed: int
    count: int
    width: int
    height: int
    grid_png: str = Field(description="the grid of samples, base64 PNG")


Prediction = Annotated[Union[Classification, Segmentation, Detection, Generation], Field(discriminator="kind")]

ERROR_DESCRIPTIONS = {
    400: "the image is truncated or corrupt, or the multipart body is malformed",
    404: "no model of that name (the answer lists the models)",
    405: "the path does not answer this method; the Allow header lists those it does",
    413: "the upload is larger than --max-upload-mb, or the image has more pixels than --max-pixels",
    415: "the upload is not an image",
    422: "a missing or bad field (no file for an image model, a seed or count out of range), or an image "
         "the homework refuses (it says why)",
    500: "a fault in the server (logged there)",
}
ALLOW_HEADER = {"Allow": {"description": "the methods this path answers", "schema": {"type": "string"}}}


def answers(model: Any, description: str, *errors: int) -> dict:
    """The ``responses`` of a path: 200 with ``model``, each status of ``errors``, 405 and 500."""
    documented = {200: {"model": model, "description": description}}
    for status in sorted({*errors, 405, 500}):
        documented[status] = {"model": ErrorAnswer, "description": ERROR_DESCRIPTIONS[status]}
        if status == 405:
            documented[status]["headers"] = ALLOW_HEADER
    return documented


def unique_names(predictors: Sequence[Predictor]) -> dict[str, Predictor]:
    """``{name: predictor}``; names made URL-safe, and unique with ``-2``, ``-3``, ..."""
    named = {}
    for predictor in predictors:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", predictor.name).strip("-.") or "model"
        name, i = base, 1
        while name in named:
            i += 1
            name = f"{base}-{i}"
        predictor.name = name
        named[name] = predictor
    return named


class BodyLimit:
    """ASGI middleware: reads a request's body into memory and refuses it with 413 past
    ``max_bytes`` (from Content-Length at once, or while it streams in)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self.refuse(scope, send, int(length))
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self.refuse(scope, send, None)
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, scope, send, length: int | None) -> None:
        limit = f"{(self.max_bytes - MULTIPART_OVERHEAD) / MB:g} MB (--max-upload-mb)"
        message = f"{length:,} bytes; the limit is {limit}" if length is not None else f"more than {limit}"
        response = JSONResponse({"error": f"upload too large: {message}"}, status_code=413)
        await response(scope, None, send)


def create_app(predictors: Sequence[Predictor], max_upload_mb: float = 10, max_pixels: int = MAX_PIXELS,
               workers: int = 2) -> FastAPI:
    """The FastAPI application over loaded predictors (see the module docstring)."""
    models = unique_names(predictors)
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
    max_bytes = int(max_upload_mb * MB)
    # an upload within the limit stays in memory: Starlette would spool parts over 1 MB to a temporary file
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, max_bytes + MULTIPART_OVERHEAD)
    assets = {path: (read_asset(name), media) for path, (name, media) in ASSETS.items()}
    listing = {"models": [finite({**p.describe(), "display": display(p)}) for p in models.values()]}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        executor.shutdown(wait=True)

    app = FastAPI(title="dls-cv models", lifespan=lifespan,
                  description="Predictions of trained homework runs: classification, segmentation, "
                              "detection, generation. Every answer but 200 is JSON {\"error\": message}; "
                              "a 405 carries the Allow header.")
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_OVERHEAD)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        message = exc.detail
        if exc.status_code == 405 and exc.headers and "Allow" in exc.headers:
            message = f"method {request.method} not allowed here; this path answers {exc.headers['Allow']}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):  # the traceback goes to the server's log
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, status_code=500)

    for path, (content, media_type) in assets.items():
        async def asset(content=content, media_type=media_type):
            return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

        app.add_api_route(path, asset, methods=["GET"], include_in_schema=False, name=f"asset {path}")

    @app.get("/health", response_model=None, responses=answers(Health, "the server is up"))
    async def health() -> dict:
        return {"status": "ok", "models": len(models)}

    @app.get("/models", response_model=None, responses=answers(ModelList, "the models served, in --run order"))
    async def list_models() -> dict:
        return listing

    @app.post("/predict/{model}", response_model=None,
              responses=answers(Prediction, "the result, by the model's kind (see core.predictor)",
                                400, 404, 413, 415, 422))
    async def predict(model: str, file: UploadFile | None = File(None, description="the image"),
                      seed: int = Form(0, ge=0, lt=2 ** 63, description="generators: seed of the samples"),
                      count: int = Form(16, ge=1, le=64, description="generators: number of samples")) -> dict:
        predictor = models.get(model)
        if predictor is None:
            raise ServeError(404, f"unknown model {model[:100]!r}; this server has: {', '.join(models)}")
        loop = asyncio.get_running_loop()
        if predictor.kind == "generation":
            return await loop.run_in_executor(executor, predictor.generate, seed, count)
        if file is None:
            raise ServeError(422, f"no image: send it as the multipart field 'file' ({predictor.kind} model)")
        data = await file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ServeError(413, f"upload too large: more than {max_upload_mb:g} MB (--max-upload-mb)")
        what = f"upload {(file.filename or 'file')[:100]!r}"
        try:
            return await loop.run_in_executor(executor, lambda: predictor.predict(open_image(data, max_pixels, what)))
        except ImageError as exc:
            raise ServeError(IMAGE_ERROR_STATUS[exc.reason], str(exc)) from None
        except UserError as exc:  # the homework refuses this image (and says why)
            raise ServeError(422, str(exc)) from None

    return app


def read_asset(name: str) -> bytes:
    """A file of the page (``core/static/<name>``)."""
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: a file of the web page is missing (is the package installed with its "
                              "package data?)")
    return path.read_bytes()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(app: FastAPI, log_level: str = "warning"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5))


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread (for tests and benchmarks); yields the
    base URL and stops the server on exit."""
    sock = bind(host, port)
    server = uvicorn_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield address(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("core.serve", "A web page and an HTTP API over trained runs of the image homeworks.")
    parser.add_argument("--run", action="append", required=True,
                        help="run folder of an image homework (repeat for several models)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (any other than loopback "
                                                            "exposes the models to the network)")
    parser.add_argument("--port", type=cli.nonneg_int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--max-upload-mb", type=cli.positive_float, default=10, help="largest upload accepted, in MB")
    parser.add_argument("--max-pixels", type=cli.positive_int, default=MAX_PIXELS,
                        help="largest image accepted, in pixels (decompression bombs are refused)")
    parser.add_argument("--workers", type=cli.positive_int, default=2, help="inference threads")
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="torch threads per inference (default: torch's, one per core)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = cli.parse_args(parser, argv)
    if args.port > 65535:
        parser.error(f"--port {args.port}: expected 0 to 65535")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    predictors = [load_predictor(run) for run in args.run]
    app = create_app(predictors, args.max_upload_mb, args.max_pixels, args.workers)
    for p in predictors:
        print(f"model {p.name}: {p.homework} {p.kind} from {p.run_dir}")
    sock = bind(args.host, args.port)
    if not (args.host.startswith("127.") or args.host in ("localhost", "::1")):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the models",
              file=sys.stderr)
    print(f"serving {len(predictors)} model(s) at {address(sock)}  (API docs: {address(sock)}/docs; Ctrl-C stops)",
          flush=True)
    uvicorn_server(app, log_level="info").run(sockets=[sock])


if __name__ == "__main__":
    cli.run_command(main)
