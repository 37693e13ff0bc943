"""Reading the data files people have into arrays, refusing broken ones with a message that says what to fix.

Image formats (MNIST IDX, NPZ, a CSV of pixels, a ZIP of images) become an :class:`ArrayDataset`; a CSV of
readings becomes a :class:`~models.timeseries.TimeSeries` (``models/timeseries.py``, which reads CSV files
with the helpers here). Nothing here touches a database or a web framework: a notebook can call these
directly.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import torch

NUM_CLASSES = 10  # labels are class indices 0-9, as in every dataset the course uses
FORMATS = ("idx", "npz", "image_csv", "image_zip", "timeseries_csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_NAMES = ("label", "labels", "class", "target", "y")


@dataclass(frozen=True)
class ArrayDataset:
    """Images ``x`` (N, C, H, W) float32 on their original value scale and integer labels ``y`` (N,);
    ``test``: the test set the data came with (MNIST's 10,000 digits, an upload's test files), if any."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    value_range: tuple[float, float]
    description: str = ""
    test: "ArrayDataset | None" = None
    scale_rule: str = ""  # why value_range is what it is, for the upload's answer

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> "ArrayDataset":
        return ArrayDataset(self.x[index], self.y[index], self.num_classes, self.value_range, self.description)

    def with_test(self, test: "ArrayDataset", classes: list[str] | None = None,
                  test_classes: list[str] | None = None) -> "ArrayDataset":
        """This training part with ``test`` as its test set; refused when the two do not fit together: other
        image shapes, or classes that the training part lacks."""
        if test.input_shape != self.input_shape:
            raise DataFormatError(f"the test part's images are {_shape(test)} but the training part's are "
                                  f"{_shape(self)}; both parts must hold images of one size")
        if classes is not None and test_classes is not None:  # named classes (a ZIP's folders)
            extra = sorted(set(test_classes) - set(classes))
            if extra:
                raise DataFormatError(f"the test part has class(es) {', '.join(extra)} that the training part lacks "
                                      f"(it has {', '.join(classes)}); a model can only be tested on classes it "
                                      "was trained on")
            labels = torch.tensor([classes.index(c) for c in test_classes], dtype=torch.int64)[test.y]
        else:
            extra = sorted(set(test.y.unique().tolist()) - set(self.y.unique().tolist()))
            if extra:
                raise DataFormatError(f"the test part has label(s) {', '.join(map(str, extra))} that the training "
                                      "part lacks; a model can only be tested on classes it was trained on")
            labels = test.y
        test = ArrayDataset(test.x, labels, self.num_classes, self.value_range)
        return dataclasses.replace(self, test=test)

    def on_scale(self, low: float, high: float) -> "ArrayDataset":
        """This data, its test part too, read on the scale ``low``-``high`` that the uploader named; refused
        when the pixels do not lie on it."""
        if not low < high:
            raise DataFormatError(f"value_range {low:g},{high:g}: the low end must be below the high end")
        for part in (self, self.test):
            if part is not None and len(part) and (float(part.x.min()) < low or float(part.x.max()) > high):
                raise DataFormatError(f"value_range {low:g},{high:g}: the pixels run from {float(part.x.min()):g} "
                                      f"to {float(part.x.max()):g}, outside it")
        test = None if self.test is None else dataclasses.replace(self.test, value_range=(low, high))
        return dataclasses.replace(self, value_range=(low, high), test=test, scale_rule="value_range as given")


def _shape(data: ArrayDataset) -> str:
    return "x".join(str(n) for n in data.input_shape[-2:])


class DataFormatError(ValueError):
    """A data file is not what it claims to be; the message says what is wrong with it."""


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
             0x0E: np.dtype(">f8")}


def read_idx(data: bytes, name: str = "file", *, max_bytes: int | None = None) -> np.ndarray:
    """Parse an IDX file (the format of MNIST and Fashion-MNIST), gzipped or raw. A gzipped file is inflated
    a piece at a time and refused (:class:`ArchiveTooLarge`) as soon as it passes ``max_bytes``."""
    if data[:2] == b"\x1f\x8b":
        data = inflate_gzip(data, name, max_bytes)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataFormatError(f"{name}: not an IDX file (the magic number must be 00 00 <type> <dims>, "
                              f"got {data[:4].hex(' ') or 'nothing'})")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFormatError(f"{name}: IDX header is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape) * dtype.itemsize  # exact: np.prod wraps past 2**63
    if len(data) != expected:
        raise DataFormatError(f"{name}: IDX header says shape {list(shape)} ({expected} bytes) but the file has "
                              f"{len(data)} bytes; it is truncated or not the file it claims to be")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


INFLATE_CHUNK = 1 << 20


def inflate_gzip(data: bytes, name: str, max_bytes: int | None) -> bytes:
    """``data`` gunzipped (every member), refused as soon as the output passes ``max_bytes``: zlib is asked
    for a megabyte at a time, so a bomb costs at most the limit, never what it claims to expand to."""
    out, rest = bytearray(), data
    try:
        while rest:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = rest
            while True:
                out += inflater.decompress(chunk, INFLATE_CHUNK)
                if max_bytes is not None and len(out) > max_bytes:
                    raise ArchiveTooLarge(f"{name}: the gzip data expands past the {max_bytes:,}-byte limit")
                chunk = inflater.unconsumed_tail
                if inflater.eof or not chunk:  # at a member's end the rest is unused_data (and zlib keeps the tail)
                    break
            if not inflater.eof:
                raise DataFormatError(f"{name}: gzip data is damaged or truncated (it ends early)")
            rest = inflater.unused_data
    except zlib.error as exc:
        raise DataFormatError(f"{name}: gzip data is damaged or truncated ({exc})") from None
    return bytes(out)


def images_and_labels(images: np.ndarray, labels: np.ndarray, *, value_range: tuple[float, float],
                      description: str) -> ArrayDataset:
    if images.ndim != 3:
        raise DataFormatError(f"images must be a 3-D array (count, height, width); got shape {list(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFormatError(f"{len(images)} images but {labels.shape[0] if labels.ndim else 0} labels; "
                              "the two files must have one label per image")
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return ArrayDataset(x, y, num_classes=int(y.max()) + 1 if len(y) else 0, value_range=value_range,
                        description=description)


# -- detecting the format ---------------------------------------------------------------------------------


def detect_format(files: list[tuple[str, bytes]]) -> str:
    """Guess the format from the file names and first bytes; the caller may name it instead. Several files
    (a labels file beside its images, a test part beside the training part) are read as the first one."""
    if len(files) > 1 and all(_looks_like_idx(name, data) for name, data in files):
        return "idx"
    name, data = files[0]
    lower = name.lower()
    if _looks_like_idx(name, data):
        return "idx"
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
        return "npz" if lower.endswith(".npz") or (names and all(n.endswith(".npy") for n in names)) else "image_zip"
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace").lower()
    columns = [c.strip().strip('"') for c in header.split(",")]
    if any(c in LABEL_NAMES for c in columns):
        return "image_csv"
    return "timeseries_csv"


def _looks_like_idx(name: str, data: bytes) -> bool:
    return data[:2] in (b"\x1f\x8b", b"\x00\x00") or name.lower().endswith((".idx", "-ubyte", "-ubyte.gz"))


# -- a training part and a test part -----------------------------------------------------------------------

# A file whose name has "test" or "t10k" (MNIST's test files) at the start of a word is the test part.
TEST_NAME = re.compile(r"(?<![a-z])(test|t10k)", re.IGNORECASE)
# How many files each format takes for its training part; the test part takes as many.
FILES_PER_PART = {"idx": 2, "npz": 1, "image_csv": 1, "image_zip": 1, "timeseries_csv": 1}
OWN_TEST_SET = {"idx": "four files: t10k-/test images and labels beside the training pair",
                "npz": "arrays x_test and y_test beside x and y (or x_train and y_train)",
                "image_csv": "a second CSV whose name has 'test' in it",
                "image_zip": "train/ and test/ folders at the top, each with one folder per class"}


def split_parts(files: list[tuple[str, bytes]], fmt: str,
                test_files: list[str] | None = None) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """The files of the training part and of the test part: those named in ``test_files``, or else those
    whose names say test (``t10k-images-idx3-ubyte.gz``, ``mnist_test.csv``)."""
    names = [name for name, _ in files]
    if test_files is not None:
        unknown = [n for n in test_files if n not in names]
        if unknown:
            raise DataFormatError(f"test_files names {', '.join(unknown)}, which is not among the uploaded files "
                                  f"({', '.join(names)})")
        is_test = [name in test_files for name in names]
    else:
        is_test = [bool(TEST_NAME.search(name)) for name in names]
    train = [f for f, t in zip(files, is_test) if not t]
    test = [f for f, t in zip(files, is_test) if t]
    per_part = FILES_PER_PART[fmt]
    if test and not train:
        raise DataFormatError(f"only a test part was sent ({', '.join(n for n, _ in test)}); send the training "
                              "files too, or, if these are the training data, rename them so that their names do "
                              "not say test")
    if test and fmt in ("npz", "image_zip", "timeseries_csv"):
        how = OWN_TEST_SET.get(fmt, "nothing: a time series is tested on its last part, in time order")
        raise DataFormatError(f"{fmt} takes one file; its test set goes inside it: {how}")
    if len(train) != per_part or len(test) not in (0, per_part):
        files_word = {1: "one file", 2: "two files (images and labels)"}[per_part]
        what = f"{files_word}, and as many again for a test part" if fmt in ("idx", "image_csv") else files_word
        raise DataFormatError(f"{fmt} takes {what}; got {len(train)} training and {len(test)} test file(s) "
                              f"({', '.join(names)}). A test file's name says test or t10k, or test_files names "
                              "them")
    return train, test


# -- labels and images ------------------------------------------------------------------------------------


def check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Class indices 0-9 as int64, or a DataFormatError naming the first bad one."""
    labels = np.asarray(labels)
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataFormatError(f"{where}: labels must be whole numbers 0-{NUM_CLASSES - 1}; label {i} is "
                                  f"{labels[i]!r}")
    elif labels.dtype.kind not in "iu":
        raise DataFormatError(f"{where}: labels must be integers 0-{NUM_CLASSES - 1}, not {labels.dtype}")
    bad = (labels < 0) | (labels >= NUM_CLASSES)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(f"{where}: labels must be 0-{NUM_CLASSES - 1}; label {i} is {labels[i]}")
    return labels.astype(np.int64)


def value_range_of(images: np.ndarray) -> tuple[tuple[float, float], str]:
    """The scale the pixels are on, and the rule that chose it (an upload may name another: value_range)."""
    if not images.size:
        return (0.0, 1.0), "no pixels: 0-1"
    low, high = float(images.min()), float(images.max())
    whole = images.dtype.kind in "iub" or bool(np.all(images == np.round(images)))
    if whole and images.dtype != np.uint8 and low >= 0 and 1 < high <= 16:  # images and IDX are 8-bit, however dark
        return (0.0, 16.0), "whole numbers up to 16: read as 0-16, the scale of scikit-learn's 8x8 digits"
    if images.dtype == np.uint8 or (whole and low >= 0 and 1 < high <= 255):
        return (0.0, 255.0), "8-bit pixels (whole numbers up to 255): read as 0-255"
    if high == low:
        return (low, low + 1.0), f"every pixel is {low:g}: read as {low:g}-{low + 1:g}"
    return (low, high), f"the data's own smallest and largest values, {low:g}-{high:g}"


def _image_dataset(images: np.ndarray, labels: np.ndarray, where: str) -> ArrayDataset:
    if len(images) == 0:
        raise DataFormatError(f"{where}: the file holds no images")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise DataFormatError(f"{where}: images must be (count, height, width) or (count, 1, height, width); got "
                              f"shape {list(images.shape)}")
    if not np.issubdtype(images.dtype, np.number) or images.dtype.kind == "c":
        raise DataFormatError(f"{where}: image values must be numbers, not {images.dtype}")
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        i = int(np.argmax(~np.isfinite(images).reshape(len(images), -1).all(axis=1)))
        raise DataFormatError(f"{where}: image {i} holds NaN or infinite values")
    labels = check_labels(labels, where)
    value_range, rule = value_range_of(images)
    parsed = images_and_labels(images, labels, value_range=value_range, description="")
    return dataclasses.replace(parsed, scale_rule=rule)


def parse_idx(files: list[tuple[str, bytes]], *, max_bytes: int | None = None) -> ArrayDataset:
    """An MNIST-style pair: an images file (3-D) and a labels file (1-D), in either order, gzipped or raw;
    ``max_bytes``: the most each may inflate to."""
    if len(files) != 2:
        raise DataFormatError(f"IDX data comes as two files, images and labels; got {len(files)}")
    arrays = {name: read_idx(data, name, max_bytes=max_bytes) for name, data in files}
    by_rank = {a.ndim: (name, a) for name, a in arrays.items()}
    if set(by_rank) != {1, 3}:
        raise DataFormatError("IDX: expected one images file (3 dimensions) and one labels file (1 dimension); "
                              f"got {', '.join(f'{n}: {a.ndim}' for n, a in arrays.items())}")
    (images_name, images), (labels_name, labels) = by_rank[3], by_rank[1]
    if len(images) != len(labels):
        raise DataFormatError(f"{images_name} holds {len(images)} images but {labels_name} holds {len(labels)} "
                              "labels; they must be the same count")
    return _image_dataset(images, labels, labels_name)


def parse_npz(data: bytes, name: str, *, max_bytes: int | None = None) -> ArrayDataset:
    """Arrays ``x`` and ``y`` (or Keras' ``x_train`` and ``y_train``), and a test part in ``x_test`` and
    ``y_test`` when the file has one; ``max_bytes``: the most the arrays may take together once inflated."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as npz:
            files = [n[: -len(".npy")] for n in npz.namelist() if n.endswith(".npy")]
            train = next((p for p in (("x", "y"), ("x_train", "y_train")) if set(p) <= set(files)), None)
            test = [k for k in ("x_test", "y_test") if k in files]
            if train is None and len(test) == 2:
                raise DataFormatError(f"{name}: only a test part (x_test, y_test); add the training part as "
                                      "arrays 'x' and 'y' (or x_train and y_train)")
            if train is None:
                raise DataFormatError(f"{name}: an NPZ needs arrays 'x' (images) and 'y' (labels), or x_train and "
                                      f"y_train; it has {', '.join(files) or 'none'}")
            if len(test) == 1:
                raise DataFormatError(f"{name}: {test[0]} without {({'x_test', 'y_test'} - set(test)).pop()}; a "
                                      "test part needs both its images and its labels")
            budget = [max_bytes, max_bytes]
            arrays = {k: _npy_member(npz, k, name, budget) for k in (*train, *test)}
    except DataFormatError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataFormatError(f"{name}: not a readable NPZ file ({exc})") from None
    parsed = _npz_part(arrays[train[0]], arrays[train[1]], name, train)
    if test:
        parsed = parsed.with_test(_npz_part(arrays["x_test"], arrays["y_test"], f"{name} (test part)", test))
    return parsed


def _npy_member(npz: zipfile.ZipFile, key: str, name: str, budget: list) -> np.ndarray:
    """One array of an NPZ, read the way ``np.load`` reads it, but with its size from the ``.npy`` header
    checked against what is left of ``budget`` before any data is inflated. ``np.load`` would inflate the
    whole member first, so a 1 MB file that holds a gigabyte would cost a gigabyte."""
    with npz.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise DataFormatError(f"{name}: array {key!r} is .npy version {version[0]}.{version[1]}; save it with "
                                  "numpy.savez (version 1.0 or 2.0)")
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise DataFormatError(f"{name}: array {key!r} holds Python objects, which are not read (pickles can run "
                                  "code); save numbers")
        size = math.prod(shape) * dtype.itemsize
        if budget[1] is not None:
            budget[0] -= size
            if budget[0] < 0:
                raise ArchiveTooLarge(f"{name}: array {key!r} is {list(shape)} of {dtype} ({size:,} bytes); the arrays "
                                      f"pass the {budget[1]:,}-byte limit")
        raw = f.read(size)
        if len(raw) != size:
            raise DataFormatError(f"{name}: array {key!r} is truncated ({len(raw):,} of {size:,} bytes)")
    array = np.frombuffer(raw, dtype=dtype)
    return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape)


def _npz_part(x: np.ndarray, y: np.ndarray, name: str, keys: tuple | list) -> ArrayDataset:
    if y.ndim != 1 or len(y) != len(x):
        raise DataFormatError(f"{name}: '{keys[0]}' holds {len(x)} images but '{keys[1]}' holds "
                              f"{y.shape[0] if y.ndim else 0} labels; they must be the same count")
    return _image_dataset(x, y, name)


# The widest CSV read: a 256x256 image and its label. Wider files are refused from their header line.
MAX_CSV_COLUMNS = 256 * 256 + 1


def _csv_header(data: bytes, name: str) -> list[str]:
    if not data.strip():
        raise DataFormatError(f"{name}: the file is empty")
    first = data.split(b"\n", 1)[0]
    if first.count(b",") + 1 > MAX_CSV_COLUMNS:
        raise DataFormatError(f"{name}: {first.count(b',') + 1:,} columns; a CSV may have at most "
                              f"{MAX_CSV_COLUMNS:,} (a 256x256 image and its label)")
    try:
        return [c.strip() for c in next(csv.reader([first.decode("utf-8-sig").rstrip("\r")], skipinitialspace=True))]
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{name}: not a readable CSV file ({exc})") from None


def read_csv(data: bytes, name: str) -> pd.DataFrame:
    _csv_header(data, name)
    try:
        frame = pd.read_csv(io.BytesIO(data), skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{name}: not a readable CSV file ({str(exc).strip()})") from None
    if frame.empty:
        raise DataFormatError(f"{name}: the CSV has a header but no rows")
    return frame


def numeric_columns(frame: pd.DataFrame, columns: list[str], name: str) -> np.ndarray:
    """The columns as float64, or a DataFormatError naming the first cell that is not a number. The columns
    are converted one by one and stacked once: assigning each back into the frame costs quadratic time."""
    out = np.empty((len(frame), len(columns)), dtype=np.float64)
    for i, column in enumerate(columns):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataFormatError(f"{name}: row {row + 1} (line {row + 2}), column {column!r}: "
                                  f"{frame[column].iloc[row]!r} is not a number")
        out[:, i] = values
    return out


def _csv_numbers(data: bytes, name: str, columns: list[str]) -> np.ndarray:
    """Every row after the header as float64, in one pass of numpy's C reader; where that fails, the first
    cell that is not a finite number, or the cells numpy does not read (quotes after a space), found by
    reading the rows again one at a time."""
    if not data.split(b"\n", 1)[-1].strip() or b"\n" not in data:
        raise DataFormatError(f"{name}: the CSV has a header but no rows")
    try:
        values = np.loadtxt(io.BytesIO(data), delimiter=",", skiprows=1, ndmin=2, quotechar='"', dtype=np.float64,
                            encoding="utf-8-sig")
        if values.shape[1] == len(columns) and np.isfinite(values).all():
            return values
    except ValueError:
        pass
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig", "replace")), skipinitialspace=True)
    next(rows)
    values = []
    for row, cells in enumerate(rows):
        if not cells:
            continue
        if len(cells) != len(columns):
            raise DataFormatError(f"{name}: row {row + 1} (line {row + 2}) has {len(cells)} cells; the header has "
                                  f"{len(columns)} columns")
        try:
            numbers = [float(cell) for cell in cells]
        except ValueError:
            numbers = [math.nan]
        if not all(map(math.isfinite, numbers)):
            for column, cell in zip(columns, cells):
                try:
                    ok = math.isfinite(float(cell))
                except ValueError:
                    ok = False
                if not ok:
                    raise DataFormatError(f"{name}: row {row + 1} (line {row + 2}), column {column!r}: "
                                          f"{cell.strip()!r} is not a number")
        values.append(numbers)
    return np.array(values, dtype=np.float64).reshape(len(values), len(columns))


def parse_image_csv(data: bytes, name: str, *, label_column: str | None = None,
                    image_shape: tuple[int, int] | None = None) -> ArrayDataset:
    """One image a row: a label column and the pixels in row-major order (square unless ``image_shape``)."""
    columns = _csv_header(data, name)
    label = label_column or next((c for c in columns if c.lower() in LABEL_NAMES), None)
    if label is None or label not in columns:
        raise DataFormatError(f"{name}: no label column; name one of the columns "
                              f"{' / '.join(LABEL_NAMES)} (or pass label_column); columns start "
                              f"{', '.join(columns[:5])}")
    pixels = [c for c in columns if c != label]
    if image_shape is None:
        side = int(round(len(pixels) ** 0.5))
        if side * side != len(pixels):
            raise DataFormatError(f"{name}: {len(pixels)} pixel columns do not make a square image; pass "
                                  "image_shape as HEIGHTxWIDTH")
        image_shape = (side, side)
    if image_shape[0] * image_shape[1] != len(pixels):
        raise DataFormatError(f"{name}: image_shape {image_shape[0]}x{image_shape[1]} needs "
                              f"{image_shape[0] * image_shape[1]} pixel columns; the file has {len(pixels)}")
    values = _csv_numbers(data, name, columns)
    at = columns.index(label)
    images = np.delete(values, at, axis=1).reshape(len(values), *image_shape)
    if images.min() >= 0 and images.max() <= 255 and np.all(images == np.round(images)):
        images = images.astype(np.uint8)
    return _image_dataset(images.astype(np.float32) if images.dtype != np.uint8 else images, values[:, at], name)


def parse_image_zip(data: bytes, name: str, *, max_bytes: int) -> tuple[ArrayDataset, list[str]]:
    """A ZIP of PNG/JPEG images in one folder per class; classes are the sorted folder names. With ``train/``
    and ``test/`` at the top, each holding class folders, the second is the dataset's test set.

    Refuses entries with absolute paths or '..', and archives that expand past ``max_bytes`` (counted
    while reading, since an archive's own sizes can lie)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DataFormatError(f"{name}: not a readable ZIP file ({exc})") from None
    entries = []
    for info in archive.infolist():
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if info.filename.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
            raise DataFormatError(f"{name}: entry {info.filename!r} has an absolute path or '..'; every entry "
                                  "must be <class>/<image>")
        if info.is_dir() or path.name.startswith(".") or "__MACOSX" in path.parts:
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataFormatError(f"{name}: {info.filename} is not a PNG or JPEG image")
        entries.append((path.parts, info))
    if not entries:
        raise DataFormatError(f"{name}: the archive holds no PNG or JPEG images")
    tops = {parts[0] for parts, _ in entries}
    if len(tops) == 1 and all(len(parts) >= 3 for parts, _ in entries):  # one wrapping folder is allowed
        if tops.pop().lower() == "test" and all(len(parts) == 3 for parts, _ in entries):
            raise DataFormatError(f"{name}: only a test/ folder; put the training images in a train/ folder beside "
                                  "it (train/<class>/<image>, test/<class>/<image>)")
        entries = [(parts[1:], info) for parts, info in entries]
    if {parts[0].lower() for parts, _ in entries} == {"train", "test"} and all(len(p) == 3 for p, _ in entries):
        parts_of = {"train": [], "test": []}
        for parts, info in entries:
            parts_of[parts[0].lower()].append((parts[1], info))
    else:
        parts_of = {"train": [], "test": []}
        for parts, info in entries:
            if len(parts) != 2:
                raise DataFormatError(f"{name}: {info.filename} is not in a class folder; lay the archive out as "
                                      "<class>/<image>, or train/<class>/<image> and test/<class>/<image>")
            parts_of["train"].append((parts[0], info))
    budget = [max_bytes, max_bytes]  # what is left, and the limit: shared by both parts
    train, classes = _zip_part(archive, parts_of["train"], name, budget)
    if not parts_of["test"]:
        return train, classes
    test, test_classes = _zip_part(archive, parts_of["test"], f"{name} (test/)", budget, at_least=1)
    return train.with_test(test, classes, test_classes), classes


def _zip_part(archive: zipfile.ZipFile, entries: list[tuple[str, zipfile.ZipInfo]], name: str, budget: list[int],
              at_least: int = 2) -> tuple[ArrayDataset, list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted({c for c, _ in entries})
    if len(classes) > NUM_CLASSES:
        raise DataFormatError(f"{name}: {len(classes)} class folders; at most {NUM_CLASSES} are supported")
    if len(classes) < at_least:
        raise DataFormatError(f"{name}: only one class folder ({classes[0]}); a classifier needs at least two")
    images, labels, size = [], [], None
    for cls, info in entries:
        budget[0] -= info.file_size
        if budget[0] < 0:
            raise ArchiveTooLarge(f"{name}: the archive expands past the {budget[1]:,}-byte limit")
        try:
            with archive.open(info) as f:
                raw = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise DataFormatError(f"{name}: {info.filename} is damaged ({exc})") from None
        if len(raw) > info.file_size:
            raise ArchiveTooLarge(f"{name}: {info.filename} expands past the size its header claims")
        try:
            image = Image.open(io.BytesIO(raw))  # reads the header only: the size is known before decoding
            width, height = image.size
            # A small PNG can hold a huge image: what it decodes to counts, as the dataset holds it for
            # training (float32, four bytes a pixel), against the same budget as the archive's bytes.
            budget[0] -= width * height * 4
            if budget[0] < 0:
                raise ArchiveTooLarge(f"{name}: its images decode past the {budget[1]:,}-byte limit "
                                      f"({info.filename} is {width}x{height})")
            image = np.asarray(image.convert("L"), dtype=np.uint8)
        except Image.DecompressionBombError:
            raise ArchiveTooLarge(f"{name}: {info.filename} decodes to more pixels than any image here may have") \
                from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataFormatError(f"{name}: {info.filename} cannot be decoded as an image ({exc})") from None
        if size is None:
            size, first = image.shape, info.filename
        elif image.shape != size:
            raise DataFormatError(f"{name}: images must all be one size; {first} is {size[1]}x{size[0]} but "
                                  f"{info.filename} is {image.shape[1]}x{image.shape[0]}")
        images.append(image)
        labels.append(classes.index(cls))
    return _image_dataset(np.stack(images), np.array(labels), name), classes


class ArchiveTooLarge(DataFormatError):
    """A ZIP that expands past the size limit."""


# -- statistics -------------------------------------------------------------------------------------------


def image_stats(data: ArrayDataset, classes: list[str] | None = None) -> dict:
    """The training part's statistics; under ``test``, the same for the test set the data came with."""
    def part(d: ArrayDataset) -> dict:
        histogram = torch.bincount(d.y, minlength=NUM_CLASSES).tolist()
        x = d.x.double()
        return {"samples": len(d), "class_histogram": histogram[: len(classes)] if classes else histogram,
                "pixel_mean": float(x.mean()), "pixel_std": float(x.std()) if len(d) > 1 else 0.0}

    stats = {"kind": "images", "shape": list(data.input_shape),
             "classes": classes or [str(i) for i in range(NUM_CLASSES)], **part(data),
             "value_range": list(data.value_range), **({"value_range_rule": data.scale_rule} if data.scale_rule else {})}
    if data.test is not None:
        stats["test"] = part(data.test)
    return stats
