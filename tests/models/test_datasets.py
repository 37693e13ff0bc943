"""Built-in datasets and the IDX format of MNIST and Fashion-MNIST."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import models.datasets as datasets
from models.dataformats import DataFormatError, images_and_labels, read_idx
from models.datasets import builtin_splits
from tests import datafiles


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


# -- bounded parsing: a small file that inflates to a lot is refused as it inflates ---------------------


def _peak_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_a_gzip_bomb_is_refused_at_the_limit_not_after_inflating():
    from models.dataformats import ArchiveTooLarge

    one_member = gzip.compress(b"\0" * 300_000_000, compresslevel=9)  # 300 MB of zeros in about 300 KB
    many_members = datafiles.gzip_bomb(320 << 20)  # 20 members of 16 MiB each, as gzip allows
    for bomb in (one_member, many_members):
        assert len(bomb) < 400_000
        before = _peak_rss_kib()
        with pytest.raises(ArchiveTooLarge, match="expands past the 10,000,000-byte limit"):
            read_idx(bomb, "images.gz", max_bytes=10_000_000)
        assert _peak_rss_kib() - before < 100_000, "the bomb was inflated past its limit"


def test_gzip_members_are_all_read_and_a_truncated_one_is_refused():
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = idx_bytes(images)
    two_members = gzip.compress(raw[:10]) + gzip.compress(raw[10:])
    assert np.array_equal(read_idx(two_members, max_bytes=1000), images)
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(gzip.compress(raw)[:-12], "images.gz")


def _npz_bytes(**arrays) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_an_npz_array_is_sized_from_its_header_before_it_is_inflated():
    from models.dataformats import ArchiveTooLarge, parse_npz

    x, y = np.zeros((4000, 64, 64), np.float32), np.zeros(4000, np.int64)  # 65 MB of zeros
    bomb = _npz_bytes(x=x, y=y)
    assert len(bomb) < 200_000
    before = _peak_rss_kib()
    with pytest.raises(ArchiveTooLarge, match=r"array 'x' is \[4000, 64, 64\] of float32 \(65,536,000 bytes\)"):
        parse_npz(bomb, "d.npz", max_bytes=10_000_000)
    assert _peak_rss_kib() - before < 30_000


def test_npz_arrays_read_as_np_load_reads_them():
    from models.dataformats import parse_npz

    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.integers(0, 256, size=(30, 8, 8)).astype(">f4"))
    y = rng.integers(0, 10, size=30).astype(np.uint8)
    parsed = parse_npz(_npz_bytes(x=x, y=y, x_test=x[:5], y_test=y[:5]), "d.npz", max_bytes=1_000_000)
    assert np.array_equal(parsed.x[:, 0].numpy(), x.astype(np.float32))
    assert parsed.y.tolist() == y.tolist() and parsed.test.y.tolist() == y[:5].tolist()
    with pytest.raises(DataFormatError, match="Python objects|not a readable NPZ"):
        parse_npz(_npz_bytes(x=np.array([{"a": 1}] * 3, dtype=object), y=y[:3]), "d.npz")


def test_a_wide_csv_is_read_in_linear_time_and_a_too_wide_one_is_refused():
    import time

    from models.dataformats import MAX_CSV_COLUMNS, parse_image_csv

    side = 160  # 25,600 pixel columns: the file that took minutes when each column was assigned in turn
    header = "label," + ",".join(f"p{i}" for i in range(side * side))
    rows = [f"{i % 10}," + ",".join(str((i + j) % 256) for j in range(side * side)) for i in range(4)]
    data = ("\n".join([header, *rows]) + "\n").encode()
    started = time.process_time()
    parsed = parse_image_csv(data, "wide.csv")
    assert time.process_time() - started < 1.0
    assert parsed.input_shape == (1, side, side) and parsed.y.tolist() == [0, 1, 2, 3]
    too_wide = ("label," + ",".join(["p"] * MAX_CSV_COLUMNS) + "\n").encode()
    with pytest.raises(DataFormatError, match=f"{MAX_CSV_COLUMNS + 1:,} columns; a CSV may have at most"):
        parse_image_csv(too_wide, "wide.csv")


@pytest.mark.parametrize("body,message", [
    (b"label,a,b,c,d\n1,0,0,0,0\n2,1,x,1,1\n", "row 2 (line 3), column 'b': 'x' is not a number"),
    (b"label,a,b,c,d\n1,0,0,0,0\n2,1,1,,1\n", "row 2 (line 3), column 'c': '' is not a number"),
    (b"label,a,b,c,d\n1,0,0,inf,0\n", "row 1 (line 2), column 'c': 'inf' is not a number"),
    (b"label,a,b,c,d\n1,0,0,0\n", "row 1 (line 2) has 4 cells; the header has 5 columns"),
    (b"label,a,b,c,d\n", "a header but no rows"),
])
def test_a_bad_csv_cell_is_named(body, message):
    from models.dataformats import parse_image_csv

    with pytest.raises(DataFormatError) as error:
        parse_image_csv(body, "d.csv")
    assert message in str(error.value)


def test_an_image_csv_with_quotes_spaces_and_the_label_last():
    from models.dataformats import parse_image_csv

    parsed = parse_image_csv(b'"a", b,c,d,label\r\n1, "2",3,4,7\r\n0,0,0,0,1\r\n', "d.csv")
    assert parsed.y.tolist() == [7, 1] and parsed.x[0, 0].tolist() == [[1.0, 2.0], [3.0, 4.0]]
