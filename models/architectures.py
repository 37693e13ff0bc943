"""Architectures: plain ``nn.Module``s built from a type name and a dict of parameters.

Every model starts with an :class:`InputScaler` holding the training data's value range as buffers, so a
saved model takes inputs on the dataset's own scale (0-16 for ``digits``, 0-255 for MNIST files) and its
exports need no separate preprocessing step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any, Callable

import torch
from torch import nn

from models.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class InputScaler(nn.Module):
    """Maps inputs from ``[low, high]`` to ``[0, 1]``."""

    def __init__(self, low: float, high: float):
        super().__init__()
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("span", torch.tensor(float(high - low) or 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.low) / self.span


@dataclass
class LogisticRegressionConfig:
    """Multiclass (softmax) logistic regression: one linear layer; the softmax lives in the loss."""


@dataclass
class MLPConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [400, 200])
    activation: str = "relu"
    dropout: float | list[float] = 0.0  # one rate for every hidden layer, or one per hidden layer


@dataclass
class CNNConfig:
    """Conv-ReLU-pool blocks, then a dense layer: a small LeNet-style network for single-channel images."""

    channels: list[int] = field(default_factory=lambda: [32, 64])
    kernel_size: int = 3
    hidden_size: int = 128
    dropout: float = 0.0


@dataclass
class RecurrentConfig:
    """LSTM or GRU over a sequence, then a dense head on the last step's output. An image is read as a
    sequence of its rows."""

    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.0


def _logistic_regression(cfg: LogisticRegressionConfig, shape: tuple[int, ...], n_out: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(prod(shape), n_out))


def _mlp(cfg: MLPConfig, shape: tuple[int, ...], n_out: int) -> nn.Module:
    rates = cfg.dropout if isinstance(cfg.dropout, list) else [cfg.dropout] * len(cfg.hidden_sizes)
    if len(rates) != len(cfg.hidden_sizes):
        raise ConfigError(f"dropout has {len(rates)} rates for {len(cfg.hidden_sizes)} hidden layers")
    layers: list[nn.Module] = [nn.Flatten()]
    n_in = prod(shape)
    for width, rate in zip(cfg.hidden_sizes, rates):
        layers += [nn.Linear(n_in, width), ACTIVATIONS[cfg.activation]()]
        if rate > 0:
            layers.append(nn.Dropout(rate))
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _cnn(cfg: CNNConfig, shape: tuple[int, ...], n_out: int) -> nn.Module:
    if len(shape) != 3:
        raise ConfigError(f"cnn needs images (channels, height, width); this data has shape {list(shape)}")
    channels, height, width = shape
    layers: list[nn.Module] = []
    for out in cfg.channels:
        layers += [nn.Conv2d(channels, out, cfg.kernel_size, padding=cfg.kernel_size // 2), nn.ReLU()]
        if min(height, width) >= 4:  # 8x8 digits afford two poolings, 28x28 images more
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels * height * width, cfg.hidden_size), nn.ReLU()]
    if cfg.dropout > 0:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(cfg.hidden_size, n_out))
    return nn.Sequential(*layers)


class RecurrentNet(nn.Module):
    def __init__(self, cell: type[nn.LSTM] | type[nn.GRU], cfg: RecurrentConfig, shape: tuple[int, ...], n_out: int):
        super().__init__()
        n_features = shape[-1]
        self.rnn = cell(n_features, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                        dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_size, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # (N, 1, H, W) images become H steps of W features
        out, _ = self.rnn(x)
        return self.head(self.dropout(out[:, -1]))


ARCHITECTURES: dict[str, tuple[type, Callable[[Any, tuple[int, ...], int], nn.Module]]] = {
    "logistic_regression": (LogisticRegressionConfig, _logistic_regression),
    "mlp": (MLPConfig, _mlp),
    "cnn": (CNNConfig, _cnn),
    "lstm": (RecurrentConfig, lambda cfg, shape, n_out: RecurrentNet(nn.LSTM, cfg, shape, n_out)),
    "gru": (RecurrentConfig, lambda cfg, shape, n_out: RecurrentNet(nn.GRU, cfg, shape, n_out)),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model before loading its ``state_dict``; saved beside the weights."""

    architecture: str
    params: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int  # for a forecaster: the number of steps ahead it outputs
    value_range: tuple[float, float]
    forecast: dict[str, Any] | None = None  # a forecaster's preparation (models.forecasting.ForecastSetup)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"], d["value_range"] = list(self.input_shape), list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(d["architecture"], dict(d["params"]), tuple(d["input_shape"]), int(d["num_classes"]),
                   tuple(d["value_range"]), d.get("forecast"))


def build_model(config: ModelConfig) -> nn.Module:
    if config.architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {config.architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    cfg_cls, builder = ARCHITECTURES[config.architecture]
    body = builder(cfg_cls(**config.params), config.input_shape, config.num_classes)
    return nn.Sequential(InputScaler(*config.value_range), body)


def parameter_count(config: ModelConfig) -> int:
    """How many parameters the model of ``config`` has, counted without allocating them."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(config).parameters())
