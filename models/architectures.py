"""Architectures: plain ``nn.Module``s built from a type name and a dict of parameters.

Every classifier starts with an :class:`InputScaler` holding the training data's value range as buffers,
so a saved model takes pixels on the dataset's own scale (0-16 for ``digits``) and its exports need no
separate preprocessing step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from math import prod
from typing import Any, Callable

import torch
from torch import nn

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
    dropout: float = 0.0


def _logistic_regression(cfg: LogisticRegressionConfig, n_in: int, n_out: int) -> nn.Module:
    return nn.Linear(n_in, n_out)


def _mlp(cfg: MLPConfig, n_in: int, n_out: int) -> nn.Module:
    if cfg.activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {cfg.activation!r}; valid: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for width in cfg.hidden_sizes:
        layers += [nn.Linear(n_in, width), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


ARCHITECTURES: dict[str, tuple[type, Callable[[Any, int, int], nn.Module]]] = {
    "logistic_regression": (LogisticRegressionConfig, _logistic_regression),
    "mlp": (MLPConfig, _mlp),
}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model before loading its ``state_dict``; saved beside the weights."""

    architecture: str
    params: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    value_range: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"], d["value_range"] = list(self.input_shape), list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(d["architecture"], dict(d["params"]), tuple(d["input_shape"]), int(d["num_classes"]),
                   tuple(d["value_range"]))


def build_model(config: ModelConfig) -> nn.Module:
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    cfg_cls, builder = ARCHITECTURES[config.architecture]
    body = builder(cfg_cls(**config.params), prod(config.input_shape), config.num_classes)
    return nn.Sequential(InputScaler(*config.value_range), nn.Flatten(), body)
