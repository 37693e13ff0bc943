"""The NumPy serving path computes what the PyTorch model computes."""

from __future__ import annotations

import pytest
import torch

from models.architectures import ModelConfig, build_model
from models.fastpath import dense_forward


@pytest.mark.parametrize("architecture, params", [
    ("logistic_regression", {}),
    ("mlp", {"hidden_sizes": [400, 200]}),
    ("mlp", {"hidden_sizes": [64, 32, 16], "activation": "tanh", "dropout": 0.5}),
    ("mlp", {"hidden_sizes": [50], "activation": "sigmoid"}),
])
@pytest.mark.parametrize("shape, value_range", [((1, 28, 28), (0.0, 255.0)), ((1, 8, 8), (0.0, 16.0))])
def test_dense_models_match_pytorch(architecture, params, shape, value_range):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture, params, shape, 10, value_range)).eval()
    x = torch.rand(17, *shape) * value_range[1]
    with torch.no_grad():
        expected = model(x).numpy()
    got = dense_forward(model)(x.numpy())
    assert got.shape == expected.shape
    assert abs(got - expected).max() < 1e-4 * max(1.0, abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("architecture, params", [("cnn", {"channels": [4]}), ("lstm", {"hidden_size": 8})])
def test_other_models_have_no_fast_path(architecture, params):
    model = build_model(ModelConfig(architecture, params, (1, 8, 8), 10, (0.0, 16.0)))
    assert dense_forward(model) is None


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9, 20])
def test_every_batch_size_matches_pytorch(rows):
    """Few rows go one at a time, more are padded with zeros to a multiple of 8: the answers must not change."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("mlp", {"hidden_sizes": [400, 200]}, (1, 28, 28), 10, (0.0, 255.0))).eval()
    x = torch.rand(rows, 1, 28, 28) * 255
    with torch.no_grad():
        expected = model(x).numpy()
    got = dense_forward(model)(x.numpy())
    assert got.shape == expected.shape == (rows, 10)
    assert abs(got - expected).max() < 1e-4 * max(1.0, abs(expected).max())
