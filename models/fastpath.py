"""A NumPy forward pass for small dense classifiers (logistic regression, MLP) at serving time.

On a batch of one, PyTorch's per-operator dispatch costs more than the arithmetic: the 400-200 MLP's eager
forward pass took 170-190 µs on one CPU thread, the same layers as NumPy matrix products 55 µs (see
docs/benchmarks.md). The input scaling is folded into the first layer's weights. Models with any other
layer (convolutions, recurrent layers) have no fast path and run in PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from models.architectures import InputScaler


def _relu(h: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0, out=h)


def _sigmoid(h: np.ndarray) -> np.ndarray:
    np.negative(h, out=h)
    np.exp(h, out=h)
    h += 1
    return np.reciprocal(h, out=h)


ACTIVATIONS: dict[type, Callable[[np.ndarray], np.ndarray]] = {
    nn.ReLU: _relu, nn.Tanh: lambda h: np.tanh(h, out=h), nn.Sigmoid: _sigmoid,
}


def _layers(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _layers(child)]
    return [module]


def dense_forward(module: nn.Module) -> Callable[[np.ndarray], np.ndarray] | None:
    """``x (N, ...) float32 -> logits (N, classes) float32`` computing what ``module`` computes in eval
    mode, or None when ``module`` is not made only of scaling, flattening, linear layers, activations and
    dropout."""
    layers = [layer for layer in _layers(module) if not isinstance(layer, (nn.Flatten, nn.Dropout))]
    scaler = layers.pop(0) if layers and isinstance(layers[0], InputScaler) else None
    if not layers or not isinstance(layers[0], nn.Linear):
        return None
    steps: list[tuple[np.ndarray, np.ndarray] | Callable[[np.ndarray], np.ndarray]] = []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            weight = layer.weight.detach().cpu().double().numpy().T
            bias = (layer.bias.detach().cpu().double().numpy() if layer.bias is not None
                    else np.zeros(weight.shape[1]))
            steps.append((weight, bias))
        elif type(layer) in ACTIVATIONS:
            steps.append(ACTIVATIONS[type(layer)])
        else:
            return None
    if scaler is not None:  # ((x - low) / span) @ W + b  ==  x @ (W / span) + (b - low / span * W.sum(0))
        low, span = float(scaler.low), float(scaler.span)
        weight, bias = steps[0]
        steps[0] = (weight / span, bias - low / span * weight.sum(axis=0))
    # Weights kept as PyTorch keeps them, (out, in), and activations as a vector or as columns: ``W @ h``.
    steps = [(np.ascontiguousarray(s[0].T, dtype=np.float32), s[1].astype(np.float32)) if isinstance(s, tuple)
             else s for s in steps]

    def columns(h: np.ndarray) -> np.ndarray:
        for step in steps:
            if isinstance(step, tuple):
                h = step[0] @ h
                h += step[1] if h.ndim == 1 else step[1][:, None]
            else:
                h = step(h)
        return h

    def forward(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1)
        n = len(x)
        if n <= SINGLE_ROWS:  # one matrix-vector product per row
            return np.stack([columns(row) for row in x]) if n > 1 else columns(x[0])[None]
        padded = -n % ROW_MULTIPLE  # rows of zeros up to a multiple of 8, as TF Serving pads its batches
        if padded:
            x = np.concatenate([x, np.zeros((padded, x.shape[1]), dtype=x.dtype)])
        return columns(x.T).T[:n]

    return forward


# On a single thread OpenBLAS multiplies a few rows at once fastest in multiples of 8: the 400-200 MLP took
# 85 µs for 8 rows and 112-144 µs for 5 to 7; 2 or 3 rows are cheaper one at a time (docs/benchmarks.md).
SINGLE_ROWS, ROW_MULTIPLE = 3, 8
