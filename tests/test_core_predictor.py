"""core.predictor: image decoding with limits, the result schema of each kind on hand values,
weights-only checkpoints, which homework a run folder names, and hw_segment's predictor
against its model computed by hand and against its predict command."""
from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.checkpoint import load_checkpoint as load_weights
from core.errors import UserError
from core.predictor import (ImageError, Predictor, classification_result, decode_png, detection_result,
                            generation_result, load_predictor, open_image, render, run_homework,
                            segmentation_result)


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def lesion_image(width: int = 75, height: int = 50, seed: int = 3) -> np.ndarray:
    from hw_segment.data import make_lesions

    data = make_lesions(1, 64, seed=seed)
    square = Image.fromarray((data.images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return np.asarray(square.resize((width, height)))


# -- images in ----------------------------------------------------------------------------------
def test_open_image_decodes_formats_to_the_same_rgb_pixels():
    array = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for fmt in ("PNG", "BMP", "TIFF"):
        image = open_image(png_bytes(array, fmt))
        assert image.mode == "RGB" and image.size == (9, 7)
        np.testing.assert_array_equal(np.asarray(image), array)
    grey = open_image(png_bytes(array[:, :, 0]))               # greyscale becomes RGB, channels equal
    np.testing.assert_array_equal(np.asarray(grey)[:, :, 2], array[:, :, 0])


def test_open_image_refuses_non_images_truncated_files_and_too_many_pixels():
    with pytest.raises(ImageError, match="upload: not an image") as info:
        open_image(b"name,value\n1,2\n", what="upload")
    assert info.value.reason == "not_image"
    data = png_bytes(np.zeros((64, 64, 3), np.uint8) + 100)
    with pytest.raises(ImageError, match="truncated or corrupt PNG") as info:
        open_image(data[: len(data) // 2])
    assert info.value.reason == "truncated"
    with pytest.raises(ImageError, match="64x64 is 4,096 pixels; the limit is 4,095") as info:
        open_image(data, max_pixels=4095)
    assert info.value.reason == "too_large"
    assert open_image(data, max_pixels=4096).size == (64, 64)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height 8-bit grey pixels, with a few bytes of zlib data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(ImageError, match="8000x6000 is 48,000,000 pixels; the limit is 40,000,000") as info:
        open_image(png_header(8000, 6000))
    assert info.value.reason == "too_large"
    with pytest.raises(ImageError, match="more than 178,956,970 pixels; the limit is 40,000,000"):
        open_image(png_header(100_000, 100_000))                # Pillow refuses it itself
    with pytest.raises(ImageError, match="truncated or corrupt PNG"):
        open_image(png_header(100, 100))                        # within limits: decoded, found short


# -- results out --------------------------------------------------------------------------------
def test_classification_result_lists_every_class_by_probability():
    result = classification_result([0.2, 0.5, 0.05, 0.25], ["bart", "homer", "lisa", "marge"])
    assert [c["label"] for c in result["classes"]] == ["homer", "marge", "bart", "lisa"]
    assert [c["probability"] for c in result["classes"]] == [0.5, 0.25, 0.2, 0.05]
    assert (result["label"], result["probability"]) == ("homer", 0.5)
    with pytest.raises(ValueError, match="3 probabilities for 4 classes"):
        classification_result([0.2, 0.5, 0.3], ["a", "b", "c", "d"])


def test_segmentation_result_is_the_mask_at_full_size_with_its_area():
    mask = np.zeros((5, 8), bool)
    mask[1:3, 2:7] = True                                     # 2 x 5 = 10 pixels of 40
    result = segmentation_result(mask)
    assert (result["width"], result["height"], result["area"], result["area_fraction"]) == (8, 5, 10, 0.25)
    np.testing.assert_array_equal(decode_png(result["mask_png"]), mask.astype(np.uint8) * 255)


def test_detection_result_sorts_boxes_by_score():
    result = detection_result([[0, 0, 10, 10], [5, 5, 20, 30]], [0.3, 0.9], ["head", "helmet"], 40, 30)
    assert result["boxes"] == [{"label": "helmet", "score": 0.9, "box": [5.0, 5.0, 20.0, 30.0]},
                               {"label": "head", "score": 0.3, "box": [0.0, 0.0, 10.0, 10.0]}]


def test_generation_result_grid_holds_the_samples():
    samples = torch.zeros(4, 1, 3, 3)
    samples[1] = 1.0
    result = generation_result(samples, seed=7)
    grid = decode_png(result["grid_png"])                     # 2 x 2 grid, 2 px padding of white
    assert grid.shape == (2 + 2 * (3 + 2), 2 + 2 * (3 + 2), 3)
    assert (result["height"], result["width"]) == (12, 12)
    assert grid[2:5, 2:5].max() == 0 and grid[2:5, 7:10].min() == 255   # sample 0 black, sample 1 white
    assert (result["seed"], result["count"]) == (7, 4)


def test_render_paints_the_mask_red():
    image = Image.fromarray(np.full((40, 60, 3), 200, np.uint8))
    mask = np.zeros((40, 60), bool)
    mask[30:, 40:] = True
    picture = np.asarray(render(segmentation_result(mask), image)).astype(int)
    assert picture[35, 50].tolist() == [225, 110, 110]        # 0.55 * 200 + 0.45 * (255, 0, 0)
    assert picture[20, 20].tolist() == [200, 200, 200]


# -- run folders --------------------------------------------------------------------------------
def test_run_homework_reads_args_json_and_refuses_what_it_cannot_name(tmp_path):
    run = tmp_path / "runs" / "hw_classify" / "a"
    run.mkdir(parents=True)
    (run / "args.json").write_text(json.dumps({"homework": "hw_segment"}))
    assert run_homework(run) == "hw_segment"
    for args in ({"command": "/x/hw_gan/train.py --epochs 2"}, {"homework": "os; import x"}, {}):
        (run / "args.json").write_text(json.dumps(args))
        with pytest.raises(UserError, match="does not say which homework wrote it"):
            run_homework(run)
    (run / "args.json").write_text("{not json")
    with pytest.raises(UserError, match="args.json: not valid JSON"):
        run_homework(run)
    with pytest.raises(UserError, match="run folder not found"):
        load_predictor(tmp_path / "missing")


def test_a_homework_without_a_predictor_is_named(tmp_path):
    (tmp_path / "args.json").write_text(json.dumps({"homework": "hw_knn"}))
    with pytest.raises(UserError, match="written by hw_knn, which has no predictor"):
        load_predictor(tmp_path)


def test_load_weights_reads_a_trainer_checkpoint_weights_only(segment_run, tmp_path):
    checkpoint = load_weights(segment_run / "last.pt")
    assert any(key.startswith("model.") for key in checkpoint["task"])

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"task": {}, "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="evil.pt: refused: the file holds Python objects"):
        load_weights(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="no 'task' entry"):
        load_weights(tmp_path / "plain.pt")


# -- hw_segment's predictor ---------------------------------------------------------------------
def test_segment_predictor_describes_its_run(segment_run):
    predictor = load_predictor(segment_run)
    assert isinstance(predictor, Predictor)
    assert (predictor.name, predictor.homework, predictor.kind) == ("lesions", "hw_segment", "segmentation")
    metrics = json.loads((segment_run / "metrics.json").read_text())
    assert predictor.info["metrics"] == metrics and predictor.info["input_size"] == [32, 32]
    assert predictor.describe()["classes"] == ["lesion"]


def test_segment_predictor_equals_the_model_by_hand(segment_run):
    import hw_segment

    image = open_image(png_bytes(lesion_image(75, 50)))
    result = load_predictor(segment_run).predict(image)
    model = hw_segment.load_model(segment_run).model
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    with torch.no_grad():
        logits = F.interpolate(model(x), size=(50, 75), mode="bilinear", align_corners=False)[0, 0]
    expected = (logits > 0).numpy()
    mask = decode_png(result["mask_png"]) > 0
    assert mask.shape == (50, 75)
    np.testing.assert_array_equal(mask, expected)
    assert result["area"] == expected.sum() and result["area_fraction"] == expected.sum() / (50 * 75)


def test_segment_predict_command_writes_the_predictors_results(segment_run, tmp_path, capsys):
    from hw_segment import predict

    paths = [tmp_path / "a.png", tmp_path / "b.jpg"]
    Image.fromarray(lesion_image(75, 50, seed=1)).save(paths[0])
    Image.fromarray(lesion_image(40, 64, seed=2)).save(paths[1])
    out = tmp_path / "out"
    predict.main(["--run", str(segment_run), *map(str, paths), "--out", str(out)])
    saved = json.loads((out / "predictions.json").read_text())
    predictor = load_predictor(segment_run)
    for path in paths:
        assert saved[str(path)] == predictor.predict(open_image(path.read_bytes()))
    assert (out / "000-a.png").is_file() and (out / "001-b.png").is_file()
    printed = capsys.readouterr().out
    assert f"{paths[0]}: mask area {saved[str(paths[0])]['area']} px" in printed
    with pytest.raises(ImageError, match="broken.png: not an image"):
        (tmp_path / "broken.png").write_text("not a png")
        predict.main(["--run", str(segment_run), str(tmp_path / "broken.png"), "--run-dir", str(tmp_path / "o2")])
    assert not (tmp_path / "o2").exists()        # nothing written before every image was read


def test_predict_out_and_its_alias_run_dir_and_the_results_file_name(segment_run, tmp_path):
    from core.predictor import predict_main

    path = tmp_path / "a.png"
    Image.fromarray(lesion_image(30, 20, seed=3)).save(path)
    first = predict_main("hw_segment", ["--run", str(segment_run), str(path), "--run-dir", str(tmp_path / "alias")])
    again = predict_main("hw_segment", ["--run", str(segment_run), str(path), "--out", str(tmp_path / "named")],
                         results_file="masks.json")
    assert json.loads((tmp_path / "alias" / "predictions.json").read_text()) == first
    assert json.loads((tmp_path / "named" / "masks.json").read_text()) == again == first
    assert not (tmp_path / "named" / "predictions.json").exists()
    with pytest.raises(UserError, match="already holds a run"):     # --out never overwrites an earlier output
        predict_main("hw_segment", ["--run", str(segment_run), str(path), "--out", str(tmp_path / "named")])
