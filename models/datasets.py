"""Built-in datasets and deterministic splits.

A dataset here is a few in-memory tensors: the training loop puts them on the device once and indexes
them with a shuffled permutation, which is far cheaper than a per-step DataLoader for data this small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch


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


@dataclass(frozen=True)
class Splits:
    train: ArrayDataset
    validation: ArrayDataset
    test: ArrayDataset


def split_dataset(data: ArrayDataset, *, validation_split: float, test_split: float, seed: int) -> Splits:
    """Shuffle once with ``seed`` and cut test, validation and train parts, in that order.

    The test part depends only on the seed and ``test_split``, so changing the validation split never leaks
    test samples into training.
    """
    n = len(data)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = int(round(n * test_split))
    n_val = int(round(n * validation_split))
    if n - n_test - n_val < 1:
        raise ValueError(f"splits leave no training samples: {n} samples, test {n_test}, validation {n_val}")
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return Splits(train=data.subset(train), validation=data.subset(val), test=data.subset(test))


def _load_digits() -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1)  # (1797, 1, 8, 8), values 0..16
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return ArrayDataset(x, y, num_classes=10, value_range=(0.0, 16.0), description=BUILTIN_DATASETS["digits"].description)


@dataclass(frozen=True)
class BuiltinDataset:
    description: str
    load: Callable[[], ArrayDataset]


BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset("scikit-learn's 1,797 real 8x8 handwritten digits, pixel values 0-16", _load_digits),
}


def load_builtin(name: str) -> ArrayDataset:
    if name not in BUILTIN_DATASETS:
        raise KeyError(f"unknown built-in dataset {name!r}; valid names: {', '.join(sorted(BUILTIN_DATASETS))}")
    return BUILTIN_DATASETS[name].load()
