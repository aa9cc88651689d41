"""core.mnist: the IDX reader and the MNIST loader, on hand-written files and bad inputs."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from core.data import DataError
from core.mnist import load_mnist, read_idx


def write_idx(path, array: np.ndarray, magic: bytes | None = None, gz: bool = True):
    """Write ``array`` as an IDX file of unsigned bytes (gzipped if ``gz``)."""
    header = magic or bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with (gzip.open if gz else open)(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def make_mnist(root, n: int = 5, split: str = "t10k", gz: bool = True):
    """A tiny MNIST under ``root/MNIST/raw``: image i is filled with the value i, labels i % 10."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    images = np.arange(n)[:, None, None] * np.ones((n, 28, 28))
    write_idx(raw / f"{split}-images-idx3-ubyte{suffix}", images, gz=gz)
    write_idx(raw / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)
    return raw


def test_idx_round_trip_any_shape(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "ok.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), images)
    write_idx(tmp_path / "plain", images, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain", shape=(None, 3, 4)), images)


def test_idx_wrong_magic_is_named(tmp_path):
    write_idx(tmp_path / "float.gz", np.zeros((2, 3)), magic=bytes([0, 0, 0x0D, 2]))
    with pytest.raises(DataError, match="float.gz: not an IDX file of unsigned bytes .magic 00000d02"):
        read_idx(tmp_path / "float.gz")
    (tmp_path / "text.gz").write_bytes(gzip.compress(b"hello, world"))
    with pytest.raises(DataError, match="text.gz: not an IDX file"):
        read_idx(tmp_path / "text.gz")


def test_idx_short_file_and_missing_file(tmp_path):
    with gzip.open(tmp_path / "short.gz", "wb") as stream:
        stream.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(5))
    with pytest.raises(DataError, match=r"short.gz: header says shape \(10,\) \(10 values\), file has 5"):
        read_idx(tmp_path / "short.gz")
    with pytest.raises(DataError, match="missing.gz: MNIST IDX file not found"):
        read_idx(tmp_path / "missing.gz")


def test_idx_shape_is_checked(tmp_path):
    write_idx(tmp_path / "small.gz", np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match=r"small.gz: IDX array of shape \(3, 8, 8\), expected \(n, 28, 28\)"):
        read_idx(tmp_path / "small.gz", shape=(None, 28, 28))


def test_load_mnist_reads_gz_and_unpacked_files(tmp_path):
    make_mnist(tmp_path / "a", n=12)
    make_mnist(tmp_path / "b", n=12, split="train", gz=False)
    images, labels = load_mnist(tmp_path / "a", "test")
    assert images.shape == (12, 28, 28) and images.dtype == np.uint8
    assert images[:, 5, 7].tolist() == list(range(12)) and labels.tolist() == [i % 10 for i in range(12)]
    images, labels = load_mnist(tmp_path / "b", "train")
    assert images.shape == (12, 28, 28) and labels[11] == 1


def test_labels_file_in_the_images_slot_is_named(tmp_path):
    raw = make_mnist(tmp_path)
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: IDX array of shape \(5,\), expected \(n, 28, 28\)"):
        load_mnist(tmp_path)


def test_images_file_in_the_labels_slot_is_named(tmp_path):
    raw = make_mnist(tmp_path)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes((raw / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: IDX array of shape \(5, 28, 28\), expected \(n,\)"):
        load_mnist(tmp_path)


def test_label_count_and_range_are_checked(tmp_path):
    raw = make_mnist(tmp_path, n=5)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: 4 labels for 5 images"):
        load_mnist(tmp_path)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 12]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: label 12 found, MNIST labels are 0-9"):
        load_mnist(tmp_path)


def test_missing_split_names_the_file(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: MNIST IDX file not found"):
        load_mnist(tmp_path, "train")
