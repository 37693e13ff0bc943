"""Built-in datasets and the IDX format of MNIST and Fashion-MNIST."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import models.datasets as datasets
from models.dataformats import DataFormatError, images_and_labels, read_idx
from models.datasets import builtin_splits


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_round_trip_raw_and_gzipped():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    for data in (idx_bytes(images), gzip.compress(idx_bytes(images))):
        assert np.array_equal(read_idx(data), images)


@pytest.mark.parametrize("data,message", [
    (b"", "not an IDX file"),
    (b"PK\x03\x04rest", "not an IDX file (the magic number must be 00 00 <type> <dims>, got 50 4b 03 04)"),
    (bytes([0, 0, 8, 3, 0, 0]), "header is truncated"),
    (idx_bytes(np.zeros((4, 2, 2)))[:-3], "header says shape [4, 2, 2] (32 bytes) but the file has 29 bytes"),
    (b"\x1f\x8b\x08\x00broken", "gzip data is damaged or truncated"),
])
def test_broken_idx_files_say_what_is_wrong(data, message):
    with pytest.raises(DataFormatError) as error:
        read_idx(data, "upload.idx")
    assert message in str(error.value) and str(error.value).startswith("upload.idx: ")


def test_image_and_label_counts_must_match():
    with pytest.raises(DataFormatError, match="3 images but 2 labels"):
        images_and_labels(np.zeros((3, 2, 2)), np.zeros(2), value_range=(0, 255), description="")


def test_missing_fashion_mnist_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        builtin_splits("fashion-mnist", validation_split=0.1, test_split=0.2, seed=0)


@pytest.mark.skipif(not (datasets.FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_uses_its_published_test_set():
    splits = builtin_splits("fashion-mnist", validation_split=0.1, test_split=0.2, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (54000, 6000, 10000)
    assert splits.train.input_shape == (1, 28, 28) and splits.train.value_range == (0.0, 255.0)
    assert np.bincount(splits.test.y.numpy()).tolist() == [1000] * 10


def test_mnist_5k_ships_with_the_package():
    assert datasets.builtin_missing("mnist-5k") is None
    data = datasets.load_builtin("mnist-5k")
    assert len(data) == 5000 and data.input_shape == (1, 28, 28) and data.value_range == (0.0, 255.0)
    assert np.bincount(data.y.numpy()).tolist() == [500] * 10
    assert float(data.x.max()) == 255.0 and 0.1 < float((data.x > 0).float().mean()) < 0.3  # ink on paper
