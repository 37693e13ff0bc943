"""Optimizers by name, with the parameters a job spec may set."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, momentum=0.0, nesterov=False, weight_decay=0.0: torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    ),
    "adam": lambda params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0: torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay
    ),
}


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, **options: Any) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, **options)
