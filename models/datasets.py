"""Built-in datasets, deterministic splits, and the canonical form (an ``.npz``) every dataset is stored in.

A dataset here is a few in-memory tensors: the training loop puts them on the device once and indexes
them with a shuffled permutation, which is far cheaper than a per-step DataLoader for data this small.
"""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.dataformats import ArrayDataset, images_and_labels, read_idx
from models.errors import ConfigError
from models.timeseries import TimeSeries, parse_timeseries_csv


@dataclass(frozen=True)
class Splits:
    train: ArrayDataset
    validation: ArrayDataset
    test: ArrayDataset


def split_dataset(data: ArrayDataset, *, validation_split: float, test_split: float, seed: int) -> Splits:
    """Shuffle once with ``seed`` and cut test, validation and train parts, in that order.

    The test part depends only on the seed and ``test_split``, so changing the validation split never leaks
    test samples into training. A dataset that came with its own test set (``data.test``) is tested on
    that; then ``test_split`` is not used and validation is cut from the training part alone.
    """
    test = data.test
    if test is None and test_split <= 0:
        raise ConfigError("test_split 0 needs a dataset with its own test set; this one has none")
    n = len(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = 0 if test is not None else int(round(n * test_split))
    n_val = int(round(n * validation_split))
    if n - n_test - n_val < 1:
        raise ConfigError(f"splits leave no training samples: {n} samples, test {n_test}, validation {n_val}")
    test_idx, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return Splits(train=data.subset(train), validation=data.subset(val),
                  test=test if test is not None else data.subset(test_idx))


# Where Debian's dataset-fashion-mnist puts the IDX files; the variable points elsewhere (a copy, a mount).
FASHION_MNIST_DIR = Path(os.environ.get("TRAINSERVE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def _load_fashion_mnist() -> ArrayDataset:
    """The 60,000 training images, with the published 10,000 as their test set."""
    parts = []
    for prefix in ("train", "t10k"):
        files = [FASHION_MNIST_DIR / f"{prefix}-{kind}-idx{dims}-ubyte.gz"
                 for kind, dims in (("images", 3), ("labels", 1))]
        if not all(f.is_file() for f in files):
            raise FileNotFoundError("Fashion-MNIST is not installed on this worker; install Debian's package: "
                                    "apt-get install dataset-fashion-mnist")
        images, labels = (read_idx(f.read_bytes(), f.name) for f in files)
        parts.append(images_and_labels(images, labels, value_range=(0.0, 255.0),
                                       description=BUILTIN_DATASETS["fashion-mnist"].description))
    return parts[0].with_test(parts[1])


def _load_digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return ArrayDataset(x, y, num_classes=10, value_range=(0.0, 16.0), description=BUILTIN_DATASETS["digits"].description)


DATA_DIR = Path(__file__).parent / "data"


def _load_mnist_5k() -> ArrayDataset:
    files = [DATA_DIR / f"mnist-5k-{kind}-ubyte.gz" for kind in ("images-idx3", "labels-idx1")]
    images, labels = (read_idx(f.read_bytes(), f.name) for f in files)
    return images_and_labels(images, labels, value_range=(0.0, 255.0),
                             description=BUILTIN_DATASETS["mnist-5k"].description)


SOLAR_CSV = DATA_DIR / "solar.csv.gz"


def _load_solar() -> TimeSeries:
    return parse_timeseries_csv(gzip.decompress(SOLAR_CSV.read_bytes()), "solar.csv")


@dataclass(frozen=True)
class BuiltinDataset:
    description: str
    load: Callable[[], ArrayDataset | TimeSeries]
    has_test_set: bool = False  # load() attaches a published test set, used instead of a random cut
    task: str = "classification"  # or "forecast": a TimeSeries, not images


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset("scikit-learn's 1,797 real 8x8 handwritten digits, pixel values 0-16", _load_digits),
    "fashion-mnist": BuiltinDataset(
        "Fashion-MNIST, 60,000 training and 10,000 test 28x28 grayscale clothing images in 10 classes, pixel "
        "values 0-255 (Debian package dataset-fashion-mnist)",
        _load_fashion_mnist, has_test_set=True),
    "mnist-5k": BuiltinDataset("5,000 real MNIST training digits, 500 of each class, 28x28, pixel values 0-255 "
                               "(shipped with trainserve)", _load_mnist_5k),
    "solar": BuiltinDataset("CNTK tutorial 106B solar-panel readings: 25,369 30-minute daytime readings of "
                            "solar.current and solar.total, 2013-12 to 2016-12 (MIT licence, Microsoft)",
                            _load_solar, task="forecast"),
}


def builtin_missing(name: str) -> str | None:
    """What to install for a built-in whose data is not on this machine; None when it is here."""
    if name == "fashion-mnist" and not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        return "apt-get install dataset-fashion-mnist (or set TRAINSERVE_FASHION_MNIST_DIR to a copy)"
    return None


def load_builtin(name: str) -> ArrayDataset | TimeSeries:
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {name!r}; valid names: {', '.join(sorted(BUILTIN_DATASETS))}")
    return BUILTIN_DATASETS[name].load()


def builtin_splits(name: str, *, validation_split: float, test_split: float, seed: int) -> Splits:
    """Train, validation and test parts of a built-in dataset; its published test set when it has one."""
    return split_dataset(load_builtin(name), validation_split=validation_split, test_split=test_split, seed=seed)


# -- the canonical form every dataset is stored in, that workers load ---------------------------------------


def to_npz(data: ArrayDataset | TimeSeries) -> bytes:
    buffer = io.BytesIO()
    if isinstance(data, TimeSeries):
        np.savez_compressed(buffer, timestamps=data.timestamps.astype("datetime64[ns]").astype(np.int64),
                            values=data.values, columns=np.array(data.columns, dtype=str))
    else:
        parts = {"": data, "_test": data.test} if data.test is not None else {"": data}
        arrays = {}
        for suffix, part in parts.items():
            x = part.x.numpy()
            if data.value_range == (0.0, 255.0) and np.all(x == np.round(x)):
                x = x.astype(np.uint8)
            arrays.update({f"x{suffix}": x, f"y{suffix}": part.y.numpy()})
        np.savez_compressed(buffer, **arrays, value_range=np.array(data.value_range),
                            num_classes=np.array(data.num_classes))
    return buffer.getvalue()


def from_npz(data: bytes) -> ArrayDataset | TimeSeries:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        if "timestamps" in npz.files:
            return TimeSeries(npz["timestamps"].astype("datetime64[ns]"), npz["values"],
                              tuple(str(c) for c in npz["columns"]))
        low, high = (float(v) for v in npz["value_range"])
        num_classes = int(npz["num_classes"])
        parts = [ArrayDataset(torch.from_numpy(npz[f"x{suffix}"].astype(np.float32)),
                              torch.from_numpy(npz[f"y{suffix}"].astype(np.int64)), num_classes=num_classes,
                              value_range=(low, high))
                 for suffix in ("", "_test") if f"x{suffix}" in npz.files]
    return parts[0].with_test(parts[1]) if len(parts) == 2 else parts[0]
