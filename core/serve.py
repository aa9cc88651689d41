"""A web page and an HTTP API over trained runs of the image homeworks.

    python -m core.serve --run runs/hw_segment/<name> [--run runs/hw_classify/<name> ...]

prints the address (http://127.0.0.1:8000 by default). The page lets one choose a model, drop
or pick an image and see the result: the top-5 classes as bars, the mask over the image with
its area, the boxes with class and score, or a grid of samples from a seed. The API:

    GET  /models                  the models: name, homework, kind, classes, input size, metrics
    GET  /health                  {"status": "ok", "models": N}
    POST /predict/<model>         multipart field ``file`` (the image); generators: form fields
                                  ``seed`` and ``count``. Answers the result of
                                  :mod:`core.predictor` (the same as ``python -m hw_x.predict``)
    GET  /docs                    OpenAPI documentation

Each ``--run`` is loaded once at start (:func:`core.predictor.load_predictor`, weights-only);
inference runs in a thread pool, one image per call, so the server keeps answering while a
model works. Errors are JSON ``{"error": "..."}`` with a 4xx status: 404 unknown model, 413
upload or image too large, 415 not an image, 400 truncated or corrupt image, 422 a missing or
bad field or an image the homework refuses; 500 (JSON too) for a fault, logged by the server.
Uploads are held in memory (never written to disk, never under a name from the request) up
to ``--max-upload-mb``; images are decoded only below ``--max-pixels``. The server binds to
127.0.0.1 unless ``--host`` says otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser

from . import cli
from .errors import UserError
from .predictor import MAX_PIXELS, ImageError, Predictor, load_predictor, open_image

PAGE = Path(__file__).with_name("static") / "index.html"
MB = 1024 * 1024
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, headers and small form fields around the file
IMAGE_ERROR_STATUS = {"not_image": 415, "truncated": 400, "too_large": 413}


class ServeError(HTTPException):
    """A 4xx answer: ``{"error": message}``."""


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
    page = PAGE.read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        executor.shutdown(wait=True)

    app = FastAPI(title="dls-cv models", lifespan=lifespan,
                  description="Predictions of trained homework runs: classification, segmentation, "
                              "detection, generation. Errors are JSON {\"error\": message}.")
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_OVERHEAD)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"bad request: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):  # the traceback goes to the server's log
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "models": len(models)}

    @app.get("/models")
    async def list_models() -> dict:
        return {"models": [p.describe() for p in models.values()]}

    @app.post("/predict/{model}")
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
