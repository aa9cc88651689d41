"""core.serve: the API over a real hw_segment run and over small hand-made predictors of the
other kinds (FastAPI's TestClient), every bad input's status and message, the OpenAPI schema of
every answer, how the page names models, a request during a blocked inference, a bounded
loopback load, and the page in a real headless Chromium at 1280, 390 and 360 px wide."""
from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import TypeAdapter

from core.errors import UserError
from core.predictor import (Predictor, classification_result, decode_png, detection_result, generation_result,
                            load_predictor)
from core.serve import (ErrorAnswer, ModelList, Prediction, create_app, display, metric_label, running_server,
                        trained_epochs)
from test_core_predictor import lesion_image, png_bytes, png_header

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_run(tmp_path: Path, name: str, metrics: dict | None = None, homework: str = "hw_fake",
             settings: dict | None = None, history_rows: int = 0) -> Path:
    """A run folder: args.json (``homework`` and ``settings``), metrics.json, and a history.csv
    of ``history_rows`` epochs."""
    run = tmp_path / name
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"homework": homework, **(settings or {})}))
    if metrics:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if history_rows:
        rows = "".join(f"{i + 1},0.5,0.4\n" for i in range(history_rows))
        (run / "history.csv").write_text("epoch,train_loss,val_loss\n" + rows)
    return run


class MeanColourClassifier(Predictor):
    """Probabilities of red, green, blue: softmax of the image's mean channel values / 10."""

    def __init__(self, run_dir):
        super().__init__(run_dir, "classification", classes=["red", "green", "blue"], input_size=(8, 8))

    def predict(self, image):
        logits = np.asarray(image, np.float64).mean((0, 1)) / 10
        return classification_result(np.exp(logits) / np.exp(logits).sum(), self.info["classes"])


class NoiseGenerator(Predictor):
    def __init__(self, run_dir):
        super().__init__(run_dir, "generation", input_size=(4, 4))

    def generate(self, seed=0, count=16):
        return generation_result(torch.rand(count, 3, 4, 4, generator=torch.Generator().manual_seed(seed)), seed)


class FixedBoxes(Predictor):
    """One helmet at (10, 10)-(60, 50) in every image."""

    def __init__(self, run_dir):
        super().__init__(run_dir, "detection", classes=["helmet", "head"])

    def predict(self, image):
        return detection_result([[10, 10, 60, 50]], [0.9], ["helmet"], image.width, image.height)


class WaitingPredictor(Predictor):
    """Segmentation of nothing, once ``release`` is set; says when it has started."""

    def __init__(self, run_dir):
        super().__init__(run_dir, "segmentation")
        self.started, self.release = threading.Event(), threading.Event()

    def predict(self, image):
        self.started.set()
        assert self.release.wait(60), "never released"
        from core.predictor import segmentation_result

        return segmentation_result(np.zeros((image.height, image.width), bool))


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory) -> Path:
    """A small ``hw_classify.train`` run: one epoch on the built-in shapes (5 classes) at 32 px."""
    from hw_classify import train

    run_dir = tmp_path_factory.mktemp("classify") / "shapes"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DLS_DATA", raising=False)  # the built-in shapes, also where CI sets DLS_DATA
        train.main(["--size", "32", "--n-per-class", "12", "--epochs", "1", "--width", "8", "--batch-size", "16",
                    "--run-dir", str(run_dir)])
    return run_dir


def shape_image(path: Path, seed: int = 0) -> Path:
    from hw_classify.data import make_shapes

    Image.fromarray(make_shapes(1, 45, seed=seed).test_images[0]).save(path)
    return path


@pytest.fixture(scope="module")
def segment_client(segment_run):
    with TestClient(create_app([load_predictor(segment_run)])) as client:
        yield client


def upload(client, model: str, data: bytes, name: str = "image.png", **kwargs):
    return client.post(f"/predict/{model}", files={"file": (name, data)}, **kwargs)


# -- the API over a real run --------------------------------------------------------------------
def test_models_and_health_describe_the_run(segment_client, segment_run):
    assert segment_client.get("/health").json() == {"status": "ok", "models": 1}
    (model,) = segment_client.get("/models").json()["models"]
    assert (model["name"], model["homework"], model["kind"]) == ("lesions", "hw_segment", "segmentation")
    assert model["metrics"] == json.loads((segment_run / "metrics.json").read_text())
    assert model["input_size"] == [32, 32] and model["classes"] == ["lesion"]
    metrics = model["metrics"]
    assert model["display"]["title"] == f"Segmentation · lesions · IoU {metrics['test_iou']:.2f}"
    assert model["display"]["epochs"] == metrics["epochs"] == 8 and model["display"]["badges"] == []
    labels = {m["key"]: m["label"] for m in model["display"]["metrics"]}
    assert labels["val_iou_std"] == "val IoU (std)" and labels["test_dice"] == "test Dice"
    assert "/predict/{model}" in segment_client.get("/openapi.json").json()["paths"]
    assert segment_client.get("/docs").status_code == 200
    assert 'id="models"' in segment_client.get("/").text


def test_segment_prediction_equals_the_predict_command(segment_client, segment_run, tmp_path):
    from hw_segment import predict

    path = tmp_path / "case.png"
    Image.fromarray(lesion_image(90, 60, seed=4)).save(path)
    predict.main(["--run", str(segment_run), str(path), "--run-dir", str(tmp_path / "out")])
    command = json.loads((tmp_path / "out" / "predictions.json").read_text())[str(path)]
    response = upload(segment_client, "lesions", path.read_bytes(), "case.png")
    assert response.status_code == 200
    assert response.json() == command
    mask = decode_png(response.json()["mask_png"])
    assert mask.shape == (60, 90) and response.json()["area"] == (mask > 0).sum()


def both_ways(predict, run: Path, tmp_path: Path, image: Path | None = None, seed: int = 0,
              count: int = 4) -> tuple[dict, dict, dict]:
    """The homework's predict command's result (from its results file, predictions.json unless
    the module names another) and the API's answer for the same image (or seed and count, for a
    generator), and the run's ``/models`` entry."""
    options = [str(image)] if image else ["--seed", str(seed), "--count", str(count)]
    predict.main(["--run", str(run), *options, "--out", str(tmp_path / "out")])
    results_file = getattr(predict, "RESULTS_FILE", "predictions.json")
    command = json.loads((tmp_path / "out" / results_file).read_text())
    with TestClient(create_app([load_predictor(run)])) as client:
        (model,) = client.get("/models").json()["models"]
        if image:
            response = upload(client, model["name"], image.read_bytes(), image.name)
        else:
            response = client.post(f"/predict/{model['name']}", data={"seed": str(seed), "count": str(count)})
    assert response.status_code == 200
    return command[str(image) if image else f"seed {seed}"], response.json(), model


def test_classification_prediction_equals_the_predict_command(classify_run, tmp_path):
    from hw_classify import predict

    command, answer, model = both_ways(predict, classify_run, tmp_path, shape_image(tmp_path / "shape.png"))
    assert answer == command
    assert (model["name"], model["homework"], model["kind"]) == ("shapes", "hw_classify", "classification")
    assert model["classes"] == ["circle", "square", "triangle", "cross", "ring"]
    assert model["metrics"] == json.loads((classify_run / "metrics.json").read_text())
    probabilities = [c["probability"] for c in command["classes"]]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1, abs=1e-5) and command["label"] == command["classes"][0]["label"]


def test_detection_prediction_equals_the_predict_command(tmp_path, monkeypatch):
    """A tiny hw_detection run (one short epoch; score threshold 0: every top-k box is kept)."""
    from hw_detection import predict, train

    monkeypatch.delenv("DLS_DATA", raising=False)  # built-in scenes
    run = tmp_path / "hardhats"
    train.main(["--n-images", "12", "--size", "64", "--epochs", "1", "--batch-size", "4", "--limit-batches", "2",
                "--score-threshold", "0", "--run-dir", str(run)])
    path = tmp_path / "site.png"
    Image.fromarray(lesion_image(100, 80, seed=5)).save(path)
    command, answer, model = both_ways(predict, run, tmp_path, path)
    assert answer == command
    assert (model["homework"], model["kind"], model["classes"]) == ("hw_detection", "detection", ["helmet", "head"])
    boxes = command["boxes"]
    assert len(boxes) > 0 and [b["score"] for b in boxes] == sorted((b["score"] for b in boxes), reverse=True)
    assert all(0 <= b["box"][0] <= b["box"][2] <= 100 and 0 <= b["box"][1] <= b["box"][3] <= 80 for b in boxes)


def test_generation_equals_the_predict_command(tmp_path, monkeypatch):
    """A tiny hw_gan run: the grid for a seed through the API equals the command's, another seed differs."""
    from hw_gan import predict, train

    monkeypatch.delenv("DLS_DATA", raising=False)  # built-in faces
    run = tmp_path / "faces"
    train.main(["--image-size", "16", "--width", "4", "--latent", "8", "--batch-size", "8", "--holdout", "8",
                "--epochs", "1", "--limit-batches", "2", "--run-dir", str(run)])
    command, answer, model = both_ways(predict, run, tmp_path, seed=3, count=4)
    assert answer == command and (command["seed"], command["count"]) == (3, 4)
    assert (model["homework"], model["kind"], model["input_size"]) == ("hw_gan", "generation", [16, 16])
    assert decode_png(answer["grid_png"]).shape == (2 + 2 * 18, 2 + 2 * 18, 3)     # 2 x 2 samples of 16 px
    other = load_predictor(run).generate(4, 4)
    assert other["grid_png"] != answer["grid_png"]


def test_autoencoder_samples_equal_the_predict_command(tmp_path, monkeypatch):
    """A dry-run hw_autoencoder VAE: its sample grid for a seed through the API equals the command's."""
    from hw_autoencoder import predict, train

    monkeypatch.delenv("DLS_DATA", raising=False)  # built-in digits
    run = tmp_path / "vae"
    train.main(["--model", "vae", "--dry-run", "--width", "8", "--latent", "4", "--run-dir", str(run)])
    command, answer, model = both_ways(predict, run, tmp_path, seed=7, count=9)
    assert answer == command and (command["seed"], command["count"]) == (7, 9)
    assert (model["homework"], model["kind"]) == ("hw_autoencoder", "generation")
    side = model["input_size"][-1]
    assert decode_png(answer["grid_png"]).shape[:2] == (2 + 3 * (side + 2),) * 2     # 3 x 3 samples


def test_plate_reading_equals_the_predict_command(tmp_path, monkeypatch):
    """A tiny reader-only hw_plates run: the image is one plate, labelled with the text read."""
    from hw_plates import predict, train

    monkeypatch.delenv("DLS_DATA", raising=False)  # built-in rendered plates
    run = tmp_path / "plates"
    train.main(["--stage", "read", "--n-rendered", "40", "--epochs", "1", "--channels", "4", "--hidden", "8",
                "--width", "64", "--run-dir", str(run)])
    path = tmp_path / "plate.png"
    Image.fromarray(lesion_image(128, 32, seed=6)).save(path)
    command, answer, model = both_ways(predict, run, tmp_path, path)
    assert answer == command
    assert (model["homework"], model["kind"], model["classes"]) == ("hw_plates", "detection", ["plate"])
    (plate,) = command["boxes"]
    assert plate["box"] == [0.0, 0.0, 128.0, 32.0] and isinstance(plate["label"], str)


@pytest.mark.parametrize("name, data, status, message", [
    ("notes.txt", b"id,value\n1,2\n", 415, "upload 'notes.txt': not an image"),
    ("empty.png", b"", 415, "upload 'empty.png': not an image (no image format recognised in 0 bytes)"),
    ("cut.png", png_bytes(lesion_image(64, 64))[:2000], 400, "upload 'cut.png': truncated or corrupt PNG"),
    ("bomb.png", png_header(8000, 6000), 413, "8000x6000 is 48,000,000 pixels; the limit is 40,000,000"),
    ("huge.png", png_header(100_000, 100_000), 413, "more than 178,956,970 pixels"),
], ids=["text", "empty", "truncated", "bomb", "pillow-bomb"])
def test_bad_images_get_their_status_and_reason(segment_client, name, data, status, message):
    response = upload(segment_client, "lesions", data, name)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_unknown_models_and_missing_fields_are_4xx_json(segment_client):
    image = png_bytes(lesion_image(32, 32))
    response = upload(segment_client, "resnet", image)
    assert response.status_code == 404
    assert response.json() == {"error": "unknown model 'resnet'; this server has: lesions"}
    response = segment_client.post("/predict/..%2F..%2Fetc%2Fpasswd", files={"file": ("x.png", image)})
    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})   # matches no route
    response = segment_client.post("/predict/lesions", data={"seed": "3"})
    assert response.status_code == 422
    assert response.json() == {"error": "no image: send it as the multipart field 'file' (segmentation model)"}
    response = segment_client.get("/predict/lesions")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    assert response.json() == {"error": "method GET not allowed here; this path answers POST"}
    assert segment_client.get("/nothing/here").json() == {"error": "Not Found"}


def test_a_large_upload_within_the_limit_is_answered(segment_client):
    noise = np.random.default_rng(0).integers(0, 256, (900, 1000, 3), dtype=np.uint8)
    data = png_bytes(noise)
    assert 2_000_000 < len(data) < 10 * 1024 * 1024           # over Starlette's 1 MB spool, under 10 MB
    response = upload(segment_client, "lesions", data)
    assert response.status_code == 200 and (response.json()["width"], response.json()["height"]) == (1000, 900)


def test_upload_size_limit(segment_run, tmp_path):
    limit = 20_000
    with TestClient(create_app([load_predictor(segment_run)], max_upload_mb=limit / 1024 / 1024)) as client:
        small = png_bytes(lesion_image(40, 40))
        assert len(small) < limit and upload(client, "lesions", small).status_code == 200
        response = upload(client, "lesions", b"\0" * (limit + 1))            # the file itself is over
        assert response.status_code == 413
        assert response.json()["error"] == "upload too large: more than 0.0190735 MB (--max-upload-mb)"
        response = upload(client, "lesions", b"\0" * (limit + 200_000))      # refused from Content-Length
        assert response.status_code == 413
        assert response.json()["error"].startswith("upload too large: 2")
        assert "the limit is 0.0190735 MB" in response.json()["error"]


# -- the other kinds, through small predictors ---------------------------------------------------
def test_classification_and_generation_answers(tmp_path):
    predictors = [MeanColourClassifier(fake_run(tmp_path, "colours", {"val_acc": 0.5})),
                  NoiseGenerator(fake_run(tmp_path, "noise"))]
    with TestClient(create_app(predictors)) as client:
        models = client.get("/models").json()["models"]
        assert [(m["name"], m["kind"], m["metrics"]) for m in models] == [
            ("colours", "classification", {"val_acc": 0.5}), ("noise", "generation", {})]
        red = np.zeros((5, 5, 3), np.uint8)
        red[..., 0] = 20                                     # mean (20, 0, 0) / 10 -> logits (2, 0, 0)
        result = upload(client, "colours", png_bytes(red)).json()
        expected = [np.e ** 2 / (np.e ** 2 + 2), 1 / (np.e ** 2 + 2), 1 / (np.e ** 2 + 2)]
        assert [c["label"] for c in result["classes"]] == ["red", "green", "blue"]
        assert [c["probability"] for c in result["classes"]] == pytest.approx(expected)
        first = client.post("/predict/noise", data={"seed": "5", "count": "4"}).json()
        assert first == client.post("/predict/noise", data={"seed": "5", "count": "4"}).json()
        assert first["grid_png"] != client.post("/predict/noise", data={"seed": "6", "count": "4"}).json()["grid_png"]
        grid = decode_png(first["grid_png"])
        assert grid.shape == (2 + 2 * 6, 2 + 2 * 6, 3) and first["count"] == 4
        response = client.post("/predict/noise", data={"count": "1000"})
        assert response.status_code == 422 and response.json()["error"].startswith("bad request: count:")
        response = client.post("/predict/noise", data={"seed": "-1"})
        assert response.status_code == 422 and response.json()["error"].startswith("bad request: seed:")


class Refusing(Predictor):
    """Refuses images narrower than 10 px (a homework's own check); fails on wider ones."""

    def __init__(self, run_dir):
        super().__init__(run_dir, "classification", classes=["a"])

    def predict(self, image):
        if image.width < 10:
            raise UserError(f"image is {image.width} px wide; this model needs at least 10")
        raise ZeroDivisionError("a fault in the model code")


def test_a_homeworks_refusal_is_422_and_a_fault_is_500_json(tmp_path):
    with TestClient(create_app([Refusing(fake_run(tmp_path, "picky"))]), raise_server_exceptions=False) as client:
        response = upload(client, "picky", png_bytes(np.zeros((5, 5, 3), np.uint8)))
        assert response.status_code == 422
        assert response.json() == {"error": "image is 5 px wide; this model needs at least 10"}
        response = upload(client, "picky", png_bytes(np.zeros((20, 20, 3), np.uint8)))
        assert response.status_code == 500
        assert response.json() == {"error": "internal error (ZeroDivisionError); see the server's log"}


def test_duplicate_run_names_get_suffixes(tmp_path):
    (tmp_path / "a").mkdir()
    predictors = [MeanColourClassifier(fake_run(tmp_path / "a", "best run")),
                  MeanColourClassifier(fake_run(tmp_path, "best run"))]
    with TestClient(create_app(predictors)) as client:
        assert [m["name"] for m in client.get("/models").json()["models"]] == ["best-run", "best-run-2"]


# -- how the page names a model ------------------------------------------------------------------
@pytest.mark.parametrize("key, label", [
    ("val_iou_std", "val IoU (std)"), ("test_dice", "test Dice"), ("map50", "mAP@50"), ("val_accuracy", "val accuracy"),
    ("val_f1_macro_tta", "val F1 macro (TTA)"), ("loo_1nn_accuracy", "leave-one-out 1-NN accuracy"),
    ("test_e2e_cer", "test end-to-end CER"), ("test_sample_recognised_sd", "test sample recognised (std)"),
    ("reader_epochs", "reader epochs"), ("std", "std"), ("odd__name_", "odd name")])
def test_metric_names_read_as_words(key, label):
    assert metric_label(key) == label


class Segmenter(Predictor):
    """Segmentation of the pixels darker than the image's mean by more than 10 (any homework)."""

    def __init__(self, run_dir, classes=("lesion",)):
        super().__init__(run_dir, "segmentation", classes=classes)

    def predict(self, image):
        from core.predictor import segmentation_result

        grey = np.asarray(image, np.float64).mean(2)
        return segmentation_result(grey < grey.mean() - 10)


def test_display_titles_badges_and_epochs(tmp_path):
    trained = display(Segmenter(fake_run(tmp_path, "lesions", homework="hw_segment", settings={"epochs": 40}, metrics={
        "epochs": 40, "val_iou": 0.8011, "test_iou": 0.7965, "val_iou_std": 0.1018, "train_seconds": 301.5})))
    assert trained["title"] == "Segmentation · lesions · IoU 0.80"                 # test IoU before val IoU
    assert trained["headline"] == {"key": "test_iou", "label": "test IoU", "value": 0.7965, "text": "IoU 0.80"}
    assert (trained["epochs"], trained["dry_run"], trained["badges"]) == (40, False, [])
    assert [(m["key"], m["label"], m["main"]) for m in trained["metrics"]] == [
        ("epochs", "epochs", False), ("val_iou", "val IoU", True), ("test_iou", "test IoU", True),
        ("val_iou_std", "val IoU (std)", True), ("train_seconds", "train seconds", False)]

    dry = display(Segmenter(fake_run(tmp_path, "20260106-101500", homework="hw_classify",
                                     settings={"dry_run": True, "epochs": 1},
                                     metrics={"epochs": 1, "val_accuracy": 0.2, "f1_circle": 0.1, "f1_big_ring": 0.3,
                                              "val_f1_macro": 0.07}), classes=("circle", "big ring")))
    assert dry["title"] == "Classification · 20260106-101500 · accuracy 0.20"
    assert [b["text"] for b in dry["badges"]] == ["dry run"] and dry["dry_run"] is True
    assert "--dry-run" in dry["badges"][0]["title"]
    assert {m["key"]: m["main"] for m in dry["metrics"]} == {      # per-class F1 is not a headline figure
        "epochs": False, "val_accuracy": True, "f1_circle": False, "f1_big_ring": False, "val_f1_macro": True}

    # epochs from history.csv when metrics.json does not say; a badge at 2 epochs, none at 3
    short = fake_run(tmp_path, "short", homework="hw_detection", settings={"epochs": 30}, history_rows=2,
                     metrics={"map50": 0.41, "map": 0.2})
    assert display(Segmenter(short))["badges"] == [
        {"text": "2 epochs", "title": "trained for 2 epochs only: its predictions may be poor"}]
    assert display(Segmenter(short))["title"] == "Detection · short · mAP@50 0.41"
    longer = fake_run(tmp_path, "longer", homework="hw_detection", settings={"epochs": 3}, history_rows=3)
    assert (display(Segmenter(longer))["epochs"], display(Segmenter(longer))["badges"]) == (3, [])
    # a run of two stages: the fewer epochs count; a run that says nothing of epochs: the settings
    plates = display(Segmenter(fake_run(tmp_path, "plates", homework="hw_plates", metrics={
        "reader_epochs": 1, "detector_epochs": 12, "test_exact": 0.5, "test_e2e_exact": 0.25})))
    assert (plates["epochs"], [b["text"] for b in plates["badges"]]) == (1, ["1 epoch"])
    assert plates["title"] == "Plate reading · plates · exact reads 0.25"
    quiet = fake_run(tmp_path, "faces", homework="hw_gan", settings={"epochs": 50})
    assert display(Segmenter(quiet))["title"] == "GAN · faces" and display(Segmenter(quiet))["headline"] is None
    assert trained_epochs(quiet, {}, {"epochs": 50}) == 50 and trained_epochs(quiet, {}, {}) is None
    assert trained_epochs(quiet, {"epochs": True}, {"epochs": 5}) == 5             # a flag is not a count
    other = display(Segmenter(fake_run(tmp_path, "x", homework="hw_new_task", metrics={"test_mse": 0.001234})))
    assert other["title"] == "New task · x · MSE 0.001234"


def test_models_answers_json_when_a_metric_is_nan(tmp_path):
    run = fake_run(tmp_path, "odd")
    (run / "metrics.json").write_text('{"val_iou": NaN, "test_iou": 0.5, "val_loss": Infinity}')
    with TestClient(create_app([Segmenter(run)])) as client:
        response = client.get("/models")
    assert response.status_code == 200
    (model,) = response.json()["models"]
    assert model["metrics"] == {"val_iou": None, "test_iou": 0.5, "val_loss": None}
    assert [m["key"] for m in model["display"]["metrics"]] == ["test_iou"]


# -- the OpenAPI schema: every answer of every path ----------------------------------------------
def test_openapi_documents_every_answer_and_405_carries_allow(tmp_path):
    predictors = [Segmenter(fake_run(tmp_path, "lesions", {"test_iou": 0.5})),
                  MeanColourClassifier(fake_run(tmp_path, "colours")), NoiseGenerator(fake_run(tmp_path, "noise")),
                  FixedBoxes(fake_run(tmp_path, "boxes"))]
    with TestClient(create_app(predictors, max_upload_mb=0.05)) as client:
        schema = client.get("/openapi.json").json()
        paths = schema["paths"]
        assert sorted((path, method) for path, ops in paths.items() for method in ops) == [
            ("/health", "get"), ("/models", "get"), ("/predict/{model}", "post")]
        error = {"$ref": "#/components/schemas/ErrorAnswer"}
        expected = {"/health": {"200", "405", "500"}, "/models": {"200", "405", "500"},
                    "/predict/{model}": {"200", "400", "404", "405", "413", "415", "422", "500"}}
        for path, ops in paths.items():
            (operation,) = ops.values()
            responses = operation["responses"]
            assert set(responses) == expected[path], path
            for status, response in responses.items():
                assert response["description"], (path, status)
                if status != "200":
                    assert response["content"]["application/json"]["schema"] == error, (path, status)
            assert responses["405"]["headers"]["Allow"]["schema"] == {"type": "string"}
        assert schema["components"]["schemas"]["ErrorAnswer"]["required"] == ["error"]
        assert "HTTPValidationError" not in json.dumps(paths)            # 422 is {"error": ...} too
        oneof = paths["/predict/{model}"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert sorted(oneof["discriminator"]["mapping"]) == ["classification", "detection", "generation", "segmentation"]

        # the answers are the documented ones: each status, each body of the documented shape
        image = png_bytes(lesion_image(40, 30))
        answers = {
            200: [upload(client, "lesions", image), upload(client, "colours", image), upload(client, "boxes", image),
                  client.post("/predict/noise", data={"seed": "1", "count": "4"})],
            400: [upload(client, "lesions", image[:300])], 404: [upload(client, "nothing", image)],
            413: [upload(client, "lesions", b"\0" * 60_000), upload(client, "lesions", png_header(8000, 6000))],
            415: [upload(client, "lesions", b"plain text", "notes.txt")],
            422: [client.post("/predict/lesions"), client.post("/predict/noise", data={"count": "0"})],
        }
        for status, responses in answers.items():
            assert [r.status_code for r in responses] == [status] * len(responses)
            for r in responses:
                if status == 200:
                    assert TypeAdapter(Prediction).validate_python(r.json()).model_dump() == r.json()   # nothing undocumented
                else:
                    assert ErrorAnswer.model_validate(r.json()).error and set(r.json()) == {"error"}
        listing = client.get("/models").json()
        assert [m.display.title for m in ModelList.model_validate(listing).models] == [
            "Fake · lesions · IoU 0.50", "Fake · colours", "Fake · noise", "Fake · boxes"]
        for method, path, allow in (("GET", "/predict/lesions", "POST"), ("PUT", "/predict/lesions", "POST"),
                                    ("POST", "/models", "GET"), ("DELETE", "/health", "GET"), ("POST", "/", "GET"),
                                    ("POST", "/favicon.ico", "GET")):
            response = client.request(method, path)
            assert (response.status_code, response.headers.get("allow")) == (405, allow), (method, path)
            assert response.json() == {"error": f"method {method} not allowed here; this path answers {allow}"}


def test_the_page_its_files_and_the_favicon_are_served(tmp_path):
    with TestClient(create_app([MeanColourClassifier(fake_run(tmp_path, "colours"))])) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for link in ('href="favicon.svg"', 'href="page.css"', 'src="page.js"'):
            assert link in page.text
        icon = client.get("/favicon.ico")
        assert (icon.status_code, icon.headers["content-type"]) == (200, "image/x-icon")
        with Image.open(io.BytesIO(icon.content)) as ico:
            assert ico.format == "ICO" and (32, 32) in ico.info["sizes"]
        svg = client.get("/favicon.svg")
        assert (svg.status_code, svg.headers["content-type"]) == (200, "image/svg+xml")
        assert svg.text.startswith("<svg") and "viewBox" in svg.text
        assert client.get("/page.css").headers["content-type"].startswith("text/css")
        assert "function predict" in client.get("/page.js").text
        assert client.get("/static/index.html").status_code == 404            # only the page's own paths


def test_command_line_refuses_bad_options_before_loading(capsys):
    from core import serve

    for argv, message in ((["--run", "x", "--port", "70000"], "--port 70000: expected 0 to 65535"),
                          (["--run", "x", "--max-upload-mb", "0"], "--max-upload-mb: expected a number > 0, got '0'"),
                          (["--run", "x", "--workers", "0"], "--workers: expected an integer >= 1, got '0'")):
        with pytest.raises(SystemExit) as info:
            serve.main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err


# -- a real server on loopback -------------------------------------------------------------------
def test_a_request_during_another_inference_is_answered(tmp_path):
    waiting = WaitingPredictor(fake_run(tmp_path, "slow"))
    fast = MeanColourClassifier(fake_run(tmp_path, "fast"))
    image = png_bytes(np.zeros((6, 6, 3), np.uint8))
    with running_server(create_app([waiting, fast], workers=2)) as url, httpx.Client(base_url=url, timeout=60) as client:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(upload, client, "slow", image)
            assert waiting.started.wait(60)
            # the slow inference is still running: the other endpoints and the other model answer
            assert client.get("/health").json()["status"] == "ok"
            assert upload(client, "fast", image).json()["label"] == "red"
            assert not slow.done()
            waiting.release.set()
            assert slow.result().json()["area"] == 0


def test_bounded_load_on_loopback(segment_run):
    """200 requests, 8 at a time: every one answers 200 with the same mask; p50/p95 printed."""
    image = png_bytes(lesion_image(64, 64, seed=9))
    with running_server(create_app([load_predictor(segment_run)], workers=2)) as url, \
            httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=8)) as client:
        def one(_):
            start = time.perf_counter()
            response = upload(client, "lesions", image)
            return response, time.perf_counter() - start

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(200)))
    assert [r.status_code for r, _ in answers] == [200] * 200
    assert len({r.json()["mask_png"] for r, _ in answers}) == 1
    latencies = sorted(t for _, t in answers)
    print(f"\nload: 200 requests, 8 concurrent: p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"p95 {latencies[189] * 1000:.1f} ms (shared CPU)")


def require_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run should have installed it")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    return CHROMIUM


def test_the_page_in_a_real_browser(segment_run, classify_run, tmp_path):
    require_chromium()
    from playwright.sync_api import sync_playwright

    path = tmp_path / "lesion.png"
    Image.fromarray(lesion_image(120, 90, seed=4)).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    predictor, classifier = load_predictor(segment_run), load_predictor(classify_run)
    expected = predictor.predict(Image.open(path).convert("RGB"))
    shape = shape_image(tmp_path / "shape.png", seed=1)
    top5 = classifier.predict(Image.open(shape).convert("RGB"))["classes"][:5]
    others = [FixedBoxes(fake_run(tmp_path, "boxes")), NoiseGenerator(fake_run(tmp_path, "noise"))]
    with running_server(create_app([predictor, classifier, *others])) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 620}, accept_downloads=True)
            page.goto(url + "/")
            page.wait_for_selector("input[name=model][value=lesions]:checked", state="attached")
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#summary[data-kind=segmentation]")
            summary = page.text_content("#summary")
            assert summary.startswith(f"area {expected['area']} px (")
            # the canvas shows the image at full size with the mask painted red where the mask is set
            mask = decode_png(expected["mask_png"]) > 0
            assert 0.05 < mask.mean() < 0.95                  # a lesion on skin: both colours to check
            shown = np.array(page.evaluate(
                "() => Array.from($('view').getContext('2d').getImageData(0, 0, 120, 90).data)"), np.uint8)
            shown = shown.reshape(90, 120, 4)[..., :3].astype(int)
            original = np.asarray(Image.open(path).convert("RGB")).astype(int)
            red = np.round(0.55 * original + 0.45 * np.array([255, 0, 0]))
            assert np.abs(shown[mask] - red[mask]).max() <= 1
            assert np.abs(shown[~mask] - original[~mask]).max() <= 1
            page.screenshot(path=str(tmp_path / "page.png"))
            page.set_input_files("#file", str(tmp_path / "notes.txt"))
            page.wait_for_function("() => $('error').textContent.length > 0")
            assert "not an image" in page.text_content("#result #error")
            # the classifier: its top-5 classes as bars, most likely first
            page.check("input[name=model][value=shapes]")
            assert "circle, square, triangle, cross, ring" in page.text_content("#info")
            page.set_input_files("#file", str(shape))
            page.wait_for_selector("#summary[data-kind=classification]")
            bars = page.eval_on_selector_all("#bars .bar", "rows => rows.map(r => [r.querySelector('.name')"
                                             ".textContent, r.querySelector('.value').textContent])")
            assert bars == [[c["label"], f"{100 * c['probability']:.1f} %"] for c in top5]
            with page.expect_download() as info:                  # the picture with its top classes under it
                page.click("#download-png")
            assert info.value.suggested_filename == "shapes-shape.png"
            picture = np.asarray(Image.open(info.value.path()).convert("RGB")).astype(int)
            side = Image.open(shape).width
            assert picture.shape[1] == side and picture.shape[0] > side
            assert np.abs(picture[:side] - np.asarray(Image.open(shape).convert("RGB")).astype(int)).max() <= 1
            page.screenshot(path=str(tmp_path / "classification.png"))
            # a detector: the boxes drawn on the image
            page.check("input[name=model][value=boxes]")
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#summary[data-kind=detection]")
            assert page.text_content("#summary") == "1 box(es); helmet 0.90"
            edge = page.evaluate("() => Array.from($('view').getContext('2d').getImageData(10, 30, 1, 1).data)")
            assert edge[:3] == [255, 42, 42]                          # the box's left side, #ff2a2a
            page.screenshot(path=str(tmp_path / "detection.png"))
            # a generator: a seed in, the grid of samples out
            page.check("input[name=model][value=noise]")
            assert page.is_hidden("#uploader") and page.is_visible("#generator")
            page.fill("#seed", "5")
            page.fill("#count", "4")
            page.click("#generate")
            page.wait_for_selector("#summary[data-kind=generation]")
            assert page.text_content("#summary") == "4 samples from seed 5"
            grid = others[1].generate(5, 4)["grid_png"]
            assert page.get_attribute("#grid", "src") == "data:image/png;base64," + grid
            with page.expect_download() as info:
                page.click("#download-png")
            assert info.value.suggested_filename == "noise-seed5.png"
            assert (np.asarray(Image.open(info.value.path())) == decode_png(grid)).all()
            page.screenshot(path=str(tmp_path / "generation.png"))
        finally:
            browser.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


class Gated(Predictor):
    """A loaded predictor behind a gate: each prediction waits until the test opens ``gate``."""

    def __init__(self, inner: Predictor):
        super().__init__(inner.run_dir, inner.kind)
        self.info, self.inner, self.gate = inner.info, inner, threading.Event()

    def predict(self, image):
        assert self.gate.wait(60), "the gate never opened"
        return self.inner.predict(image)


def overflow(page) -> tuple[int, int]:
    """The page's scroll width and the viewport's width (equal when nothing sticks out)."""
    return tuple(page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]"))


def canvas_pixels(page) -> np.ndarray:
    data = page.evaluate("() => $('view').toDataURL('image/png')")
    return decode_png(data.split(",", 1)[1])[..., :3].astype(int)


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)], ids=["1280px", "390px"])
def test_the_page_on_a_wide_and_a_narrow_screen(segment_run, classify_run, tmp_path, width, height):
    """Upload, a slow prediction (spinner, drop zone disabled), the result inside the viewport and
    scaled to it, the opacity slider, the downloads, and an error in the result panel."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    path = tmp_path / "lesion.png"
    Image.fromarray(lesion_image(600, 450, seed=4)).save(path)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    gated, classifier = Gated(load_predictor(segment_run)), load_predictor(classify_run)
    original = np.asarray(Image.open(path).convert("RGB")).astype(int)
    expected = gated.inner.predict(Image.open(path).convert("RGB"))
    mask = decode_png(expected["mask_png"]) > 0
    assert 0.05 < mask.mean() < 0.95
    others = [FixedBoxes(fake_run(tmp_path, "boxes")), NoiseGenerator(fake_run(tmp_path, "noise"))]
    app = create_app([gated, classifier, *others])
    with running_server(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
            failed, choosers = [], []
            page.on("response", lambda r: failed.append((r.status, r.url)) if r.status >= 400 else None)
            page.on("filechooser", lambda chooser: choosers.append(chooser))
            page.goto(url + "/")
            page.wait_for_selector("input[name=model][value=lesions]:checked", state="attached")
            # the list: homework, run name and headline metric; a badge on the one-epoch classifier
            titles = [t.replace("\u00a0", " ") for t in page.eval_on_selector_all(
                ".choice-title", "spans => spans.map(s => s.textContent)")]
            segment_iou, shapes_accuracy = (json.loads((run / "metrics.json").read_text()) for run in (segment_run, classify_run))
            assert titles == [f"Segmentation · lesions · IoU {segment_iou['test_iou']:.2f}",
                              f"Classification · shapes · accuracy {shapes_accuracy['val_accuracy']:.2f}",
                              "Fake · boxes", "Fake · noise"]
            assert page.eval_on_selector_all(".choice", "cs => cs.map(c => Array.from(c.querySelectorAll('.badge'), "
                                                        "b => b.textContent))") == [[], ["1 epoch"], [], []]
            for box in page.locator(".choice").all():
                assert box.bounding_box()["x"] + box.bounding_box()["width"] <= width
            assert overflow(page)[0] <= overflow(page)[1] == width

            # a slow prediction: the spinner shows and the drop zone takes nothing
            page.set_input_files("#file", str(path))
            page.wait_for_selector("#busy .spinner", state="visible")
            assert page.get_attribute("#drop", "aria-disabled") == "true"
            assert "disabled" in page.get_attribute("#drop", "class").split()
            assert page.is_disabled("#file") and page.get_attribute("#result", "aria-busy") == "true"
            assert page.text_content("#busy-text") == "Predicting lesion.png with lesions…"
            assert page.evaluate("() => getComputedStyle(document.querySelector('.spinner')).animationName") == "spin"
            expect(page.locator("#busy")).to_be_in_viewport()
            assert page.is_disabled("#drop")                                # aria-disabled, as Playwright sees it
            page.click("#drop", force=True)                                 # no file chooser while busy
            gated.gate.set()
            page.wait_for_selector("#summary[data-kind=segmentation]")
            assert page.is_hidden("#busy") and page.get_attribute("#drop", "aria-disabled") == "false"
            assert page.is_enabled("#file") and choosers == []
            assert page.text_content("#summary").startswith(f"area {expected['area']} px (")

            # the result: inside the viewport, as wide as the panel allows (never wider than the image)
            view = page.locator("#view")
            expect(view).to_be_in_viewport()
            box = view.bounding_box()
            room = page.evaluate("() => { const s = getComputedStyle($('result')); return $('result').clientWidth"
                                 " - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight); }")
            assert 0 <= box["x"] and box["x"] + box["width"] <= width
            assert box["width"] == pytest.approx(min(600, room), abs=1)
            assert box["height"] == pytest.approx(box["width"] * 450 / 600, abs=1.5)
            if width < 600:
                assert box["width"] < 600 and box["width"] > 0.8 * width    # scaled down to the screen
            assert overflow(page)[0] <= width

            # the mask's opacity: 45 % by default, fully red at 100 %
            shown = canvas_pixels(page)
            red = np.round(0.55 * original + 0.45 * np.array([255, 0, 0]))
            assert np.abs(shown[mask] - red[mask]).max() <= 1 and np.abs(shown[~mask] - original[~mask]).max() <= 1
            page.fill("#opacity", "100")
            assert page.text_content("#opacity-value") == "100 %"
            shown = canvas_pixels(page)
            assert (shown[mask] == [255, 0, 0]).all() and np.abs(shown[~mask] - original[~mask]).max() <= 1

            # the downloads: the API's answer as JSON, the picture as shown as PNG
            with page.expect_download() as info:
                page.click("#download-json")
            assert info.value.suggested_filename == "lesions-lesion.json"
            assert json.loads(Path(info.value.path()).read_text()) == expected
            with page.expect_download() as info:
                page.click("#download-png")
            assert info.value.suggested_filename == "lesions-lesion.png"
            picture = np.asarray(Image.open(info.value.path()).convert("RGB")).astype(int)
            assert picture.shape == (450, 600, 3) and (picture == shown).all()
            page.screenshot(path=str(tmp_path / "segmentation.png"), full_page=True)

            # a non-image: the error in the result panel, in view, the old result gone
            page.set_input_files("#file", str(notes))
            page.wait_for_selector("#summary[data-kind=error]")
            error = page.locator("#result #error")
            expect(error).to_be_visible()
            expect(error).to_be_in_viewport()
            assert error.text_content() == ("error: upload 'notes.txt': not an image (no image format recognised "
                                            "in 12 bytes)")
            assert page.is_hidden("#view") and page.is_hidden("#tools") and page.is_hidden("#busy")
            assert error.bounding_box()["x"] + error.bounding_box()["width"] <= width
            assert overflow(page)[0] <= width
            page.screenshot(path=str(tmp_path / "error.png"), full_page=True)

            # a generator's grid scales too
            page.check("input[name=model][value=noise]")
            page.fill("#count", "64")
            page.click("#generate")
            page.wait_for_selector("#summary[data-kind=generation]")
            grid = page.locator("#grid").bounding_box()
            assert grid["width"] > 300 and grid["x"] + grid["width"] <= width and overflow(page)[0] <= width
            assert failed == [(415, url + "/predict/lesions")]             # the non-image; no favicon 404
            if width < 400:                                                 # the narrowest screen served
                page.set_viewport_size({"width": 360, "height": 740})
                assert overflow(page) == (360, 360)
                for box in page.locator(".choice").all():
                    assert box.bounding_box()["x"] + box.bounding_box()["width"] <= 360
        finally:
            gated.gate.set()
            browser.close()
