"""Plate formats (hw_plates.formats): shapes, their prior, the shape-constrained CTC path, and
reading with them."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from hw_plates.formats import NEG, PlateFormats, shape_mask, shape_of, shaped_paths
from hw_plates.models import CRNN, likeliest_texts
from hw_plates.text import Alphabet, collapse


def test_shapes_write_letters_and_digits_and_keep_other_characters():
    assert shape_of("RK867AD") == "LLDDDLL" and shape_of("4GLS168") == "DLLLDDD"
    assert shape_of("A-1 B") == "L-D L" and shape_of("") == ""


def test_formats_count_distinct_texts_and_score_a_shape_by_its_share():
    formats = PlateFormats.from_texts(["AB123", "AB123", "XY999", "ZZ1", "Q12", ""], weight=0.5, min_count=2)
    assert formats.counts == {"LLDDD": 2, "LDD": 1, "LLD": 1} and formats.total == 4
    assert formats.log_prior("CD456") == pytest.approx(math.log(2.5 / 4))
    assert formats.log_prior("1234") == pytest.approx(math.log(0.5 / 4))          # an unseen shape: half a text
    assert formats.shapes(5) == ["LLDDD"] and formats.shapes(3) == []              # LDD, LLD: once each
    again = PlateFormats.from_dict(formats.to_dict())
    assert again.counts == formats.counts and (again.weight, again.min_count, again.total) == (0.5, 2, 4)
    assert formats.active and not PlateFormats({"LL": 3}, weight=0.0).active and not PlateFormats().active
    with pytest.raises(ValueError, match="weight must be at least 0"):
        PlateFormats({"LL": 1}, weight=-1)
    with pytest.raises(ValueError, match="min_count must be at least 1"):
        PlateFormats({"LL": 1}, min_count=0)


def test_a_shape_mask_allows_letters_digits_or_the_character_itself():
    alphabet = Alphabet("0123456789ABC-")
    mask = shape_mask("LD-", alphabet)
    allowed = [[alphabet.chars[c - 1] for c in row.nonzero().flatten().tolist()] for row in mask]
    assert allowed == [list("ABC"), list("0123456789"), ["-"]]
    assert not mask[:, 0].any()                                                     # never the blank
    assert shape_mask("L.", alphabet) is None                                       # '.' is not in the alphabet


def test_shaped_paths_equal_the_best_path_found_by_trying_every_path():
    torch.manual_seed(0)
    frames, classes = 5, 4
    for n in (1, 2, 3):
        log_probs = torch.randn(2, frames, classes).mul(2).log_softmax(-1)
        masks = torch.rand(3, n, classes) < 0.6
        masks[..., 0] = False
        masks[..., 1] |= ~masks[..., 1:].any(-1)                                    # every position allows a class
        labels, scores = shaped_paths(log_probs, masks)
        for s, p in itertools.product(range(2), range(3)):
            best, text = -math.inf, None
            for path in itertools.product(range(classes), repeat=frames):
                spelled = collapse(path)
                if len(spelled) == n and all(masks[p, j, c] for j, c in enumerate(spelled)):
                    value = sum(float(log_probs[s, t, c]) for t, c in enumerate(path))
                    if value > best:
                        best, text = value, spelled
            assert float(scores[s, p]) == pytest.approx(best, abs=1e-4)
            assert labels[s, p].tolist() == text


def test_a_shape_longer_than_the_frames_allow_has_no_path():
    log_probs = torch.randn(1, 3, 4).log_softmax(-1)
    masks = torch.zeros(1, 2, 4, dtype=torch.bool)
    masks[..., 1] = True                        # "aa" needs a blank between: 3 frames, not 2; 4 chars never
    assert float(shaped_paths(log_probs, masks)[1][0, 0]) > NEG / 2
    masks4 = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks4[..., 1:] = True
    assert float(shaped_paths(log_probs, masks4)[1][0, 0]) < NEG / 2
    assert PlateFormats({"LLLL": 5}).candidates(log_probs[:, :, None], [[3]], Alphabet("ABC")) == [set()]


def frames_of(alphabet: Alphabet, rows: list[dict[str, float]]) -> torch.Tensor:
    """(1, T, 1, C) log-probabilities: each frame's listed symbols ('-' the blank) with the given
    probabilities, the rest shared evenly."""
    out = torch.zeros(len(rows), alphabet.num_classes)
    for t, row in enumerate(rows):
        rest = (1 - sum(row.values())) / (alphabet.num_classes - len(row))
        out[t] = rest
        for symbol, p in row.items():
            out[t, 0 if symbol == "-" else alphabet.encode(symbol)[0]] = p
    return out.log()[None, :, None]


def test_formats_turn_a_close_digit_into_the_letter_the_plate_format_expects():
    alphabet = Alphabet()
    # a clear B, then a frame that is 0 (0.55) or O (0.40): greedy reads "B0"
    log_probs = frames_of(alphabet, [{"B": 0.97}, {"-": 0.97}, {"0": 0.55, "O": 0.40}, {"-": 0.97}])
    assert likeliest_texts(log_probs, alphabet)[0] == ["B0"]
    letters = PlateFormats.from_texts(["AB", "CD", "EF", "X1"], weight=0.7)          # LL: 3 texts, LD: 1
    assert likeliest_texts(log_probs, alphabet, formats=letters)[0] == ["BO"]
    # the gap is log(0.55 / 0.40) = 0.32 against 0.7 * (log 3.5 - log 1.5) = 0.59; at weight 0.3: 0.25
    letters.weight = 0.3
    assert likeliest_texts(log_probs, alphabet, formats=letters)[0] == ["B0"]
    # a clear digit stays a digit: log(0.9 / 0.05) = 2.9 outweighs the prior
    sure = frames_of(alphabet, [{"B": 0.97}, {"-": 0.97}, {"0": 0.90, "O": 0.05}, {"-": 0.97}])
    assert likeliest_texts(sure, alphabet, formats=PlateFormats({"LL": 3, "LD": 1}, weight=0.7))[0] == ["B0"]


def test_formats_restore_a_faint_character_the_frames_nearly_dropped():
    alphabet = Alphabet()
    # "T?P2": between T and P a frame where N (0.4) is slightly less likely than the blank (0.55)
    log_probs = frames_of(alphabet, [{"T": 0.97}, {"N": 0.40, "-": 0.55}, {"P": 0.97}, {"-": 0.97}, {"2": 0.97}])
    assert likeliest_texts(log_probs, alphabet)[0] == ["TP2"]
    formats = PlateFormats({"LLLD": 40, "LLD": 2}, weight=0.7)
    assert "TNP2" in formats.candidates(log_probs, [[3]], alphabet)[0]             # one longer than the reading
    assert likeliest_texts(log_probs, alphabet, formats=formats)[0] == ["TNP2"]


def test_a_reader_reads_with_its_formats_and_greedily_without():
    alphabet = Alphabet()
    torch.manual_seed(0)
    reader = CRNN(alphabet, channels=4, hidden=8, width=64).eval()
    images = torch.rand(3, 3, 32, 64)
    with torch.no_grad():
        log_probs = reader(images).log_softmax(-1)
    from hw_plates.text import greedy_decode
    assert reader.formats is None and reader.read(images) == greedy_decode(log_probs, alphabet)
    reader.formats = PlateFormats({"LLDD": 10, "DDD": 4}, weight=2.0, min_count=1)
    assert reader.read(images) == likeliest_texts(log_probs[None], alphabet, formats=reader.formats)[0]
    reader.formats.weight = 0.0                                                       # inactive: greedy again
    assert reader.read(images) == greedy_decode(log_probs, alphabet)


TINY = ["--n-rendered", "40", "--n-scenes", "20", "--epochs", "1", "--channels", "4", "--hidden", "8", "--width", "64",
        "--stage", "read"]


def test_a_run_saves_the_shapes_of_its_training_texts_and_reads_its_test_figures_with_them(runs_root, monkeypatch,
                                                                                            tmp_path):
    import hw_plates
    from hw_plates import evaluate, train
    from hw_plates.data import make_rendered_plates
    from hw_plates.scoring import crop_metrics

    monkeypatch.delenv("DLS_DATA", raising=False)
    run = tmp_path / "run"
    metrics = train.main(TINY + ["--format-weight", "0.7", "--format-min-count", "1", "--run-dir", str(run)])
    reader = hw_plates.load_model(run).model.reader
    crops, _ = make_rendered_plates(40, 20, Alphabet(), 32, 64, seed=42)           # the run's data (seed 42)
    expected = PlateFormats.from_texts(crops.split("train").texts, 0.7, 1)
    assert reader.formats.counts == expected.counts and reader.formats.weight == 0.7
    assert crop_metrics(reader, crops.split("test"))[0]["exact"] == metrics["test_exact"]
    # the built-in recipe reads without formats
    train.main(TINY + ["--run-dir", str(tmp_path / "plain")])
    assert hw_plates.load_model(tmp_path / "plain").model.reader.formats.weight == 0.0
    # evaluate reads with the run's formats, or at the weight it is given (its own rendered plates)
    shown, _ = make_rendered_plates(300, 0, Alphabet(), 32, 64, seed=12345)
    on = evaluate.main(["--run", str(run), "--run-dir", str(tmp_path / "on")])
    off = evaluate.main(["--run", str(run), "--format-weight", "0", "--run-dir", str(tmp_path / "off")])
    assert on["exact"] == crop_metrics(reader, shown.split("test"))[0]["exact"]
    reader.formats.weight = 0.0
    assert off["exact"] == crop_metrics(reader, shown.split("test"))[0]["exact"]


def test_format_options_are_checked(runs_root, capsys):
    from hw_plates import train

    for option, message in ((["--format-weight", "-1"], "--format-weight"),
                            (["--format-min-count", "0"], "argument --format-min-count: expected an integer >= 1")):
        with pytest.raises(SystemExit) as exit_info:
            train.main(option)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_candidates_of_a_batch_are_each_items_own():
    torch.manual_seed(1)
    alphabet = Alphabet()
    log_probs = torch.randn(2, 12, 3, alphabet.num_classes).mul(3).log_softmax(-1)   # 2 sources, 3 items
    formats = PlateFormats({"LLD": 5, "LDDD": 3, "DD": 2, "LLLLLL": 2})
    lengths = [{2}, {3, 4}, {6}]
    together = formats.candidates(log_probs, lengths, alphabet)
    alone = [formats.candidates(log_probs[:, :, i:i + 1], [lengths[i]], alphabet)[0] for i in range(3)]
    assert together == alone
    assert {len(t) for t in together[0]} == {2, 3} and {len(t) for t in together[2]} == {6}
    assert all(shape_of(t) in formats.counts for texts in together for t in texts)


def test_a_reader_saved_without_formats_loads_without_them_and_evaluate_says_so(tmp_path):
    from core.errors import UserError
    from hw_plates import evaluate
    from hw_plates.models import load_model, save_plate_model

    (tmp_path / "args.json").write_text('{"homework": "hw_plates"}')
    save_plate_model(tmp_path, reader=CRNN(Alphabet(), channels=4, hidden=8, width=64).eval(),
                     reader_config={"arch": "crnn_small", "height": 32, "width": 64, "channels": 4, "hidden": 8})
    assert load_model(tmp_path).model.reader.formats is None
    with pytest.raises(UserError, match="its reader was saved without plate formats"):
        evaluate.main(["--run", str(tmp_path), "--format-weight", "0.5"])
