"""Shared setup for the models/ tests (a plain module, so the GPU run can skip the service's conftest)."""

from __future__ import annotations

from models.architectures import ModelConfig, build_model
from models.dataformats import ArrayDataset
from models.datasets import Splits, load_builtin, split_dataset
from models.optimizers import build_optimizer
from models.training import seed_everything


def digits(validation_split: float = 0.1) -> Splits:
    return split_dataset(load_builtin("digits"), validation_split=validation_split, test_split=0.2, seed=0)


def model_and_optimizer(data: ArrayDataset, architecture: str, params: dict, optimizer: str, lr: float,
                        seed: int = 0, **options):
    """A freshly seeded model for ``data`` and its optimizer; returns (model, optimizer, config)."""
    seed_everything(seed)
    config = ModelConfig(architecture, params, data.input_shape, data.num_classes, data.value_range)
    model = build_model(config)
    return model, build_optimizer(optimizer, model.parameters(), lr, **options), config
