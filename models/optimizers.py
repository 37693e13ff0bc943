"""Optimizers by name, with the parameters a job spec may set.

Minibatch optimizers take a step per batch. Full-batch ones (``lbfgs``, ``bfgs``, ``newton``,
``conjugate_gradient``) run a line search over a deterministic loss, through a closure, on the whole
training set or large batches of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from models.errors import ConfigError
from models.second_order import BFGS, ConjugateGradient, Newton


@dataclass(frozen=True)
class OptimizerInfo:
    build: Callable[..., torch.optim.Optimizer]
    # Set for a full-batch optimizer: its class, by which the training loop knows to step it with a closure.
    full_batch_class: type[torch.optim.Optimizer] | None = None

    @property
    def full_batch(self) -> bool:
        return self.full_batch_class is not None


OPTIMIZERS: dict[str, OptimizerInfo] = {
    "sgd": OptimizerInfo(lambda params, lr, momentum=0.0, nesterov=False, weight_decay=0.0: torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)),
    "adagrad": OptimizerInfo(lambda params, lr, lr_decay=0.0, weight_decay=0.0, eps=1e-10: torch.optim.Adagrad(
        params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)),
    "rmsprop": OptimizerInfo(lambda params, lr, alpha=0.99, momentum=0.0, centered=False, weight_decay=0.0,
                             eps=1e-8: torch.optim.RMSprop(params, lr=lr, alpha=alpha, momentum=momentum,
                                                           centered=centered, weight_decay=weight_decay, eps=eps)),
    "adam": OptimizerInfo(lambda params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0: torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)),
    "adamw": OptimizerInfo(lambda params, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01: torch.optim.AdamW(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)),
    "lbfgs": OptimizerInfo(lambda params, lr, max_iter=20, history_size=10: torch.optim.LBFGS(
        params, lr=lr, max_iter=max_iter, history_size=history_size, line_search_fn="strong_wolfe"),
        torch.optim.LBFGS),
    "newton": OptimizerInfo(Newton, Newton),
    "conjugate_gradient": OptimizerInfo(ConjugateGradient, ConjugateGradient),
    "bfgs": OptimizerInfo(BFGS, BFGS),
}
# The names a job spec checks batch sizes and schedules against, and the classes the training loop steps
# with a closure: both read off the table above.
FULL_BATCH = frozenset(name for name, info in OPTIMIZERS.items() if info.full_batch)
_FULL_BATCH_CLASSES = tuple(info.full_batch_class for info in OPTIMIZERS.values() if info.full_batch_class)


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, **options: Any) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name].build(params, lr, **options)


def is_full_batch(optimizer: torch.optim.Optimizer) -> bool:
    return isinstance(optimizer, _FULL_BATCH_CLASSES)
