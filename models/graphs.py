"""Whole-step CUDA graphs: the training step (forward, backward, optimizer) captured once and replayed.

Small models are launch-bound on a GPU: the 400-200 MLP's step is a few dozen kernels of microseconds each,
and the GPU waits on Python between them. A captured step is one launch. What capture needs:

- static shapes: every captured batch has the same size (the tail batch of an epoch runs eagerly);
- static addresses: the batch is gathered on the device, inside the graph, from the resident dataset through
  an index buffer that is refilled before each replay;
- no host synchronisation inside the step: the loss, the correct count and a finite flag are added up on the
  device, into tensors that outlive the graph, and read by the training loop at its own pace;
- an optimizer whose step keeps its state on the device (``capturable``), warmed up on a side stream first.

Anything else (a full-batch optimizer's line search, augmentation, a learning-rate schedule that the captured
kernels would not see, an optimizer PyTorch cannot capture) trains eagerly, and the job's result says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from models.errors import ConfigError

log = logging.getLogger("trainserve.training")

COMPILE_MODES = ("none", "graph", "auto")
# Eager steps before capture: they train as usual, and they create the optimizer's state and let cuDNN and
# cuBLAS pick their algorithms outside the graph.
WARMUP_STEPS = 3
# Optimizers whose step PyTorch can capture: SGD keeps no step counter; Adam, AdamW and RMSprop do, on the
# device once ``capturable`` is set. Adagrad has no capturable implementation.
CAPTURABLE = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "rmsprop": torch.optim.RMSprop}


@dataclass(frozen=True)
class TrainingPath:
    path: str  # "graph" or "eager"
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def static_refusal(optimizer: str, *, full_batch: bool, augmenting: bool, scheduled: bool) -> str | None:
    """Why a job with these settings cannot train as a CUDA graph on any device, or None. A job spec asks
    this at submission; the training loop asks :func:`choose_path`, which adds what only the worker knows."""
    if full_batch:
        return (f"{optimizer} is a full-batch optimizer: its line search runs the model a number of times that "
                "depends on the data")
    if augmenting:
        return "augmentation draws new transforms on the host for every batch"
    if scheduled:
        return "a learning-rate schedule changes the rate between steps, and a captured step would keep the first"
    if optimizer not in CAPTURABLE:
        return f"PyTorch has no capturable {optimizer} step; use {', '.join(CAPTURABLE)}"
    return None


def optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    for name, cls in CAPTURABLE.items():
        if type(optimizer) is cls:
            return name
    return type(optimizer).__name__.lower()


def choose_path(mode: str, device: torch.device, optimizer: torch.optim.Optimizer, *, full_batch: bool,
                augmenting: bool, scheduled: bool, full_batches: int) -> TrainingPath:
    """The path a job trains on. ``auto`` takes the graph wherever it can; ``graph`` insists and raises
    ValueError, naming the reason, where it cannot; ``none`` is always eager."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"training.compile {mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if mode == "none":
        return TrainingPath("eager", "training.compile is none")
    reason = static_refusal(optimizer_name(optimizer), full_batch=full_batch, augmenting=augmenting,
                            scheduled=scheduled)
    if reason is None and device.type != "cuda":
        reason = "CUDA graphs need a GPU, and this job trains on the CPU"
    if reason is None and full_batches <= WARMUP_STEPS:
        reason = f"an epoch has {full_batches} full batches, too few to capture after {WARMUP_STEPS} warm-up steps"
    if reason is None:
        return TrainingPath("graph", "static shapes: each full batch's forward, backward and optimizer step "
                                     "replay as one CUDA graph")
    if mode == "graph":
        raise ConfigError(f"training.compile graph cannot be used: {reason}; use compile auto or none")
    return TrainingPath("eager", reason)


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Turn on ``capturable`` where the optimizer has it, and move step counters that a checkpoint from the
    eager path left on the host onto the device."""
    for group in optimizer.param_groups:
        if "capturable" in group:
            group["capturable"] = True
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor) and step.device != device:
            state["step"] = step.to(device=device, dtype=torch.float32)


class GraphStep:
    """One training step over a batch of fixed size, gathered from the resident dataset through ``index``.

    ``body(zero_grad)`` runs the step on the batch that ``index`` selects; with ``zero_grad`` false it is being
    captured, and backward writes fresh gradients into the graph's own memory on every replay. The first
    :data:`WARMUP_STEPS` calls run ``body`` eagerly on a side stream, the next captures it and replays it, and
    every later call only refills ``index`` and replays. With ``capture`` false (the CPU, in tests) every call
    runs ``body`` eagerly through the same index buffer.
    """

    def __init__(self, body: Callable[[bool], None], index: torch.Tensor, *, capture: bool = True,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        self.body, self.index, self.capture, self.optimizer = body, index, capture, optimizer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failure: str | None = None  # why capture failed; the step then stays eager
        self._warm = 0

    @property
    def batch_size(self) -> int:
        return self.index.numel()

    def __call__(self, batch: torch.Tensor) -> None:
        self.index.copy_(batch, non_blocking=True)
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture or self.failure is not None:
            self.body(True)
        elif self._warm < WARMUP_STEPS:
            self._warm += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.body(True)
            torch.cuda.current_stream().wait_stream(side)
        else:
            self._capture()
            if self.graph is not None:
                self.graph.replay()  # capture records the step without running it
            else:
                self.body(True)

    def _capture(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)  # backward allocates the gradients from the graph's pool
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.body(False)
        except Exception as exc:  # an operation capture cannot hold: train on eagerly, and say so
            torch.cuda.synchronize()
            self.failure = f"capture failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            log.warning("CUDA graph capture failed; training eagerly: %s", exc)
            return
        self.graph = graph
