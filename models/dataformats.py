"""Reading the data files people have into arrays, refusing broken ones with a message that says what to fix.

Image formats (MNIST IDX, NPZ, a CSV of pixels, a ZIP of images) become an :class:`ArrayDataset`; a CSV of
readings becomes a :class:`~models.timeseries.TimeSeries` (``models/timeseries.py``, which reads CSV files
with the helpers here). Nothing here touches a database or a web framework: a notebook can call these
directly.
"""

from __future__ import annotations

import gzip
import io
import zipfile
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
    """Images ``x`` (N, C, H, W) float32 on their original value scale and integer labels ``y`` (N,)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    value_range: tuple[float, float]
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, index: torch.Tensor) -> "ArrayDataset":
        return ArrayDataset(self.x[index], self.y[index], self.num_classes, self.value_range, self.description)


class DataFormatError(ValueError):
    """A data file is not what it claims to be; the message says what is wrong with it."""


IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
             0x0E: np.dtype(">f8")}


def read_idx(data: bytes, name: str = "file") -> np.ndarray:
    """Parse an IDX file (the format of MNIST and Fashion-MNIST), gzipped or raw."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataFormatError(f"{name}: gzip data is damaged or truncated ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES:
        raise DataFormatError(f"{name}: not an IDX file (the magic number must be 00 00 <type> <dims>, "
                              f"got {data[:4].hex(' ') or 'nothing'})")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataFormatError(f"{name}: IDX header is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataFormatError(f"{name}: IDX header says shape {list(shape)} ({expected} bytes) but the file has "
                              f"{len(data)} bytes; it is truncated or not the file it claims to be")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


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
    """Guess the format from the file names and first bytes; the caller may name it instead."""
    if len(files) == 2:
        return "idx"
    name, data = files[0]
    lower = name.lower()
    if data[:2] == b"\x1f\x8b" or lower.endswith((".idx", "-ubyte", "-ubyte.gz")) or data[:2] == b"\x00\x00":
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


def _value_range(images: np.ndarray) -> tuple[float, float]:
    if images.dtype == np.uint8 or (images.size and images.min() >= 0 and images.max() <= 255
                                    and np.all(images == np.round(images)) and images.max() > 1):
        return (0.0, 255.0)
    return (float(images.min()), float(images.max())) if images.size else (0.0, 1.0)


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
    return images_and_labels(images, labels, value_range=_value_range(images), description="")


def parse_idx(files: list[tuple[str, bytes]]) -> ArrayDataset:
    """An MNIST-style pair: an images file (3-D) and a labels file (1-D), in either order, gzipped or raw."""
    if len(files) != 2:
        raise DataFormatError(f"IDX data comes as two files, images and labels; got {len(files)}")
    arrays = {name: read_idx(data, name) for name, data in files}
    by_rank = {a.ndim: (name, a) for name, a in arrays.items()}
    if set(by_rank) != {1, 3}:
        raise DataFormatError("IDX: expected one images file (3 dimensions) and one labels file (1 dimension); "
                              f"got {', '.join(f'{n}: {a.ndim}' for n, a in arrays.items())}")
    (images_name, images), (labels_name, labels) = by_rank[3], by_rank[1]
    if len(images) != len(labels):
        raise DataFormatError(f"{images_name} holds {len(images)} images but {labels_name} holds {len(labels)} "
                              "labels; they must be the same count")
    return _image_dataset(images, labels, labels_name)


def parse_npz(data: bytes, name: str) -> ArrayDataset:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in ("x", "y") if k not in npz.files]
            if missing:
                raise DataFormatError(f"{name}: an NPZ needs arrays 'x' (images) and 'y' (labels); it has "
                                      f"{', '.join(npz.files) or 'none'}")
            x, y = npz["x"], npz["y"]
    except DataFormatError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"{name}: not a readable NPZ file ({exc})") from None
    if y.ndim != 1 or len(y) != len(x):
        raise DataFormatError(f"{name}: 'x' holds {len(x)} images but 'y' holds {y.shape[0] if y.ndim else 0} "
                              "labels; they must be the same count")
    return _image_dataset(x, y, name)


def read_csv(data: bytes, name: str) -> pd.DataFrame:
    if not data.strip():
        raise DataFormatError(f"{name}: the file is empty")
    try:
        frame = pd.read_csv(io.BytesIO(data), skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{name}: not a readable CSV file ({str(exc).strip()})") from None
    if frame.empty:
        raise DataFormatError(f"{name}: the CSV has a header but no rows")
    return frame


def numeric_columns(frame: pd.DataFrame, columns: list[str], name: str) -> np.ndarray:
    """The columns as float64, or a DataFormatError naming the first cell that is not a number."""
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataFormatError(f"{name}: row {row + 1} (line {row + 2}), column {column!r}: "
                                  f"{frame[column].iloc[row]!r} is not a number")
        frame[column] = values
    return frame[columns].to_numpy(dtype=np.float64)


def parse_image_csv(data: bytes, name: str, *, label_column: str | None = None,
                    image_shape: tuple[int, int] | None = None) -> ArrayDataset:
    """One image a row: a label column and the pixels in row-major order (square unless ``image_shape``)."""
    frame = read_csv(data, name)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
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
    values = numeric_columns(frame, [label, *pixels], name)
    images = values[:, 1:].reshape(len(values), *image_shape)
    if images.min() >= 0 and images.max() <= 255 and np.all(images == np.round(images)):
        images = images.astype(np.uint8)
    return _image_dataset(images.astype(np.float32) if images.dtype != np.uint8 else images, values[:, 0], name)


def parse_image_zip(data: bytes, name: str, *, max_bytes: int) -> tuple[ArrayDataset, list[str]]:
    """A ZIP of PNG/JPEG images in one folder per class; classes are the sorted folder names.

    Refuses entries with absolute paths or '..', and archives that expand past ``max_bytes`` (counted
    while reading, since an archive's own sizes can lie)."""
    from PIL import Image, UnidentifiedImageError

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
        parts = path.parts[1:] if len(path.parts) == 3 else path.parts  # one wrapping folder is allowed
        if len(parts) != 2:
            raise DataFormatError(f"{name}: {info.filename} is not in a class folder; lay the archive out as "
                                  "<class>/<image>")
        entries.append((parts[0], info))
    if not entries:
        raise DataFormatError(f"{name}: the archive holds no PNG or JPEG images")
    classes = sorted({c for c, _ in entries})
    if len(classes) > NUM_CLASSES:
        raise DataFormatError(f"{name}: {len(classes)} class folders; at most {NUM_CLASSES} are supported")
    if len(classes) < 2:
        raise DataFormatError(f"{name}: only one class folder ({classes[0]}); a classifier needs at least two")
    expanded, images, labels, size = 0, [], [], None
    for cls, info in entries:
        expanded += info.file_size
        if expanded > max_bytes:
            raise ArchiveTooLarge(f"{name}: the archive expands past the {max_bytes:,}-byte limit")
        with archive.open(info) as f:
            raw = f.read(max_bytes - expanded + info.file_size + 1)
        if len(raw) > info.file_size:
            raise ArchiveTooLarge(f"{name}: {info.filename} expands past the size its header claims")
        try:
            image = Image.open(io.BytesIO(raw))
            image = np.asarray(image.convert("L"), dtype=np.uint8)
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
    histogram = torch.bincount(data.y, minlength=NUM_CLASSES).tolist()
    x = data.x.double()
    return {"kind": "images", "samples": len(data), "shape": list(data.input_shape),
            "classes": classes or [str(i) for i in range(NUM_CLASSES)],
            "class_histogram": histogram[: len(classes)] if classes else histogram,
            "pixel_mean": float(x.mean()), "pixel_std": float(x.std()) if len(data) > 1 else 0.0,
            "value_range": list(data.value_range)}
