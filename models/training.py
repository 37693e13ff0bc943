"""The training loop: one function, read top to bottom.

The whole dataset lives on the training device as one tensor and each epoch walks a shuffled permutation
of it; a per-step DataLoader costs 20-40 % on the CPU for data this small, and more on a GPU.
"""

from __future__ import annotations

import copy
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.augment import AugmentConfig, augment
from models.dataformats import ArrayDataset
from models.errors import ConfigError
from models.graphs import GraphStep, TrainingPath, choose_path, make_capturable
from models.metrics import classification_report
from models.optimizers import is_full_batch
from models.schedules import ScheduleConfig, build_scheduler
from models.usage import UsageMeter


@dataclass
class EarlyStopping:
    monitor: str = "val_loss"  # val_loss, val_accuracy or train_loss
    patience: int = 5
    min_delta: float = 0.0

    @property
    def maximize(self) -> bool:
        return self.monitor == "val_accuracy"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int | None = None  # None: 64, or the whole training set for full-batch optimizers
    seed: int = 0
    device: str = "auto"
    loss: str = "cross_entropy"
    l1: float = 0.0  # penalties on weight matrices and kernels, not on biases
    l2: float = 0.0
    grad_clip_norm: float | None = None
    precision: str = "fp32"  # "bf16": autocast on CUDA
    schedule: ScheduleConfig | None = None
    early_stopping: EarlyStopping | None = None
    augmentation: AugmentConfig | None = None
    compile: str = "auto"  # "graph": whole-step CUDA graphs (models/graphs.py), "none": eager, "auto": graph where it can
    # How often the loop reads the device's finite-loss flag: None is every step on the CPU (free there) and
    # every SYNC_EVERY steps on a GPU, where each read stalls the host until the GPU catches up.
    sync_every: int | None = None
    cancel_check_seconds: float = 0.2  # how often should_stop is asked, at most; 0: before every step


@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    learning_rate: float
    samples_per_second: float
    # Classification: the share of training samples the model got right as it trained through the epoch
    # (the weights changing meanwhile, dropout and augmentation on); None for full-batch optimizers.
    train_accuracy: float | None = None
    cpu_seconds: float | None = None  # the process's CPU time during the epoch, every thread
    peak_rss_bytes: int | None = None  # the process's peak resident memory so far
    gpu_name: str | None = None
    gpu_peak_memory_bytes: int | None = None  # peak allocated by PyTorch during the epoch
    gpu_utilization: float | None = None  # percent, NVML's last sample at the epoch's end

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None  # with early stopping: the epoch whose weights the model now holds
    stopped_early: bool = False
    path: TrainingPath | None = None  # eager or CUDA graph, and why


class TrainingCancelled(Exception):
    """Raised inside :func:`fit` when ``should_stop`` says so; the epochs already reported stay valid."""


class TrainingDiverged(Exception):
    """The loss stopped being a finite number."""


SYNC_EVERY = 50


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but this worker has no usable GPU; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_loss(output: torch.Tensor, y: torch.Tensor, loss: str, reduction: str = "mean") -> torch.Tensor:
    """The loss without penalties. For classes, ``mse`` is the course's squared error between the softmax
    and the one-hot target."""
    if y.dtype == torch.long:
        if loss == "cross_entropy":
            return F.cross_entropy(output, y, reduction=reduction)
        if loss == "mse":
            per_sample = (output.softmax(1) - F.one_hot(y, output.shape[1]).to(output.dtype)).pow(2).sum(1)
            return per_sample.mean() if reduction == "mean" else per_sample.sum()
        raise ConfigError(f"loss {loss!r} does not apply to classes; use cross_entropy or mse")
    output = output.reshape(y.shape)
    if loss == "mse":
        return F.mse_loss(output, y, reduction=reduction)
    if loss == "mae":
        return F.l1_loss(output, y, reduction=reduction)
    raise ConfigError(f"loss {loss!r} does not apply to numeric targets; use mse or mae")


def penalty(model: nn.Module, l1: float, l2: float) -> torch.Tensor | float:
    if not (l1 or l2):
        return 0.0
    weights = [p for p in model.parameters() if p.ndim > 1]
    total = 0.0
    if l2:
        total = total + 0.5 * l2 * sum(w.pow(2).sum() for w in weights)
    if l1:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    return total


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, device: torch.device, loss: str = "cross_entropy",
             batch_size: int = 4096) -> dict[str, Any]:
    """Mean loss, and for classes accuracy and the predicted labels, of ``model`` on ``data``."""
    model.eval()
    total, outputs = 0.0, []
    for start in range(0, len(data), batch_size):
        out = model(data.x[start : start + batch_size].to(device)).float()
        total += float(data_loss(out, data.y[start : start + batch_size].to(device), loss, reduction="sum"))
        outputs.append(out)
    result: dict[str, Any] = {"loss": total / max(len(data), 1)}
    if data.y.dtype == torch.long and outputs:
        predicted = torch.cat(outputs).argmax(1).cpu()
        result["accuracy"] = float((predicted == data.y).float().mean())
        result["predicted"] = predicted.numpy()
    return result


def holdout_report(model: nn.Module, data: ArrayDataset, device: torch.device, loss: str = "cross_entropy") -> dict:
    """Loss, accuracy, confusion matrix and per-class precision/recall/F1 on a held-out split."""
    result = evaluate(model, data, device, loss)
    report = classification_report(data.y.numpy(), result["predicted"], data.num_classes)
    return {"test_loss": result["loss"], **report}


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: ArrayDataset,
    validation: ArrayDataset | None,
    config: TrainConfig,
    *,
    on_epoch: Callable[[EpochMetrics, Callable[[], dict]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: dict | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
) -> FitResult:
    """Train ``model`` in place and return each epoch's metrics.

    ``on_epoch(metrics, checkpoint)`` runs after every epoch; ``checkpoint()`` returns the dict that
    ``resume`` takes to continue from that epoch with the same result as an uninterrupted run.
    ``should_stop()`` runs before every step; when it answers true, :class:`TrainingCancelled` is raised.
    ``on_step(epoch, step, steps_per_epoch)`` runs before every step too (keep it cheap: a progress report).
    """
    device = resolve_device(config.device)
    model.to(device)
    x, y = train.x.to(device), train.y.to(device)
    n = len(train)
    full_batch = is_full_batch(optimizer)
    batch_size = config.batch_size or (n if full_batch else 64)
    steps_per_epoch = math.ceil(n / batch_size)
    lr = optimizer.param_groups[0]["lr"]
    scheduler = build_scheduler(config.schedule, optimizer, lr, config.epochs, steps_per_epoch) \
        if config.schedule else None
    stopper = config.early_stopping
    if stopper and stopper.monitor.startswith("val_") and not (validation is not None and len(validation)):
        raise ConfigError(f"early stopping on {stopper.monitor} needs a validation split above 0")
    augmenting = config.augmentation is not None and config.augmentation.active and x.ndim == 4
    background = float(train.value_range[0])
    full_batches = n // batch_size
    path = choose_path(config.compile, device, optimizer, full_batch=full_batch, augmenting=augmenting,
                       scheduled=config.schedule is not None, full_batches=full_batches)
    graphing = path.path == "graph"
    # Under capture, autocast must not cache casts made outside the graph.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphing) \
        if config.precision == "bf16" and device.type == "cuda" else nullcontext()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not augmenting  # fixed shapes: let cuDNN time its algorithms once
    sync_every = config.sync_every or (1 if device.type == "cpu" else SYNC_EVERY)

    # The shuffling generator is separate from the global RNG so that a checkpoint restores it exactly.
    order_rng = torch.Generator().manual_seed(config.seed)
    result = FitResult()
    best: dict[str, Any] = {"value": None, "epoch": None, "bad_epochs": 0, "model": None}
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        order_rng.set_state(resume["order_rng"])
        torch.set_rng_state(resume["torch_rng"])
        best = resume["early_stopping"]
        start_epoch = int(resume["epoch"])
        result.stopped_early = bool(resume.get("stopped_early"))

    def forward(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast:
            out = model(xb)
        return data_loss(out.float(), yb, config.loss) + penalty(model, config.l1, config.l2), out

    def objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return forward(xb, yb)[0]

    classifying = not y.is_floating_point()

    # Added up on the device and read once an epoch (the loss) or every sync_every steps (the finite flag).
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    finite = torch.ones((), device=device, dtype=torch.bool)

    def train_step(xb: torch.Tensor, yb: torch.Tensor, zero_grad: bool = True) -> None:
        loss, out = forward(xb, yb)
        if classifying:
            correct.add_((out.detach().argmax(1) == yb).sum())
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip_norm:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        optimizer.step()
        count(loss.detach(), len(yb))

    def count(loss: torch.Tensor, size: int) -> None:
        loss_sum.add_(loss * size)
        finite.logical_and_(torch.isfinite(loss))

    def check(epoch: int, step: int, checked: int) -> None:
        """Raise if a loss since step ``checked`` was not finite: one read of the device."""
        if bool(finite):
            return
        exact = step - checked <= 1
        where = f"step {step}" if exact else f"a step from {checked + 1} to {step}"
        value = f"{loss_sum.item()}" if exact else "NaN or infinite"
        raise TrainingDiverged(f"loss became {value} at epoch {epoch}, {where}; lower the learning rate or clip "
                               "gradients")

    graph_step = None
    if device.type == "cpu":  # a checkpoint from the GPU's graph path, resumed on a CPU
        for group in optimizer.param_groups:
            if group.get("capturable"):
                group["capturable"] = False
    if graphing:
        make_capturable(optimizer, device)
        index = torch.zeros(batch_size, dtype=torch.long, device=device)
        graph_step = GraphStep(lambda zero_grad: train_step(x[index], y[index], zero_grad), index,
                               optimizer=optimizer)

    def checkpoint_at(epoch: int) -> Callable[[], dict]:
        return lambda: {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "order_rng": order_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "early_stopping": best,
            "stopped_early": result.stopped_early,
        }

    epoch = start_epoch
    next_stop_check = -math.inf
    meter = UsageMeter(device)
    while epoch < config.epochs and not result.stopped_early:
        epoch += 1
        model.train()
        finite.fill_(True)
        meter.start()
        started = time.perf_counter()
        perm = torch.randperm(n, generator=order_rng).to(device)
        loss_sum.zero_()
        correct.zero_()
        checked = 0
        for step, start in enumerate(range(0, n, batch_size), start=1):
            now = time.monotonic()
            if should_stop is not None and now >= next_stop_check:
                next_stop_check = now + config.cancel_check_seconds
                if should_stop():
                    raise TrainingCancelled(f"cancelled during epoch {epoch}")
            if on_step is not None:
                on_step(epoch, step, steps_per_epoch)
            idx = perm[start : start + batch_size]
            if graph_step is not None and idx.numel() == batch_size:
                graph_step(idx)
            else:
                xb, yb = x[idx], y[idx]
                if augmenting:
                    xb = augment(xb, config.augmentation, order_rng, background)
                if full_batch:
                    count(_full_batch_step(optimizer, objective, xb, yb).detach(), idx.numel())
                else:
                    train_step(xb, yb)
            if step % sync_every == 0 or step == steps_per_epoch:
                check(epoch, step, checked)
                checked = step
            if scheduler is not None and config.schedule.per_batch:
                scheduler.step()
        current_lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None and not config.schedule.per_batch:
            scheduler.step()
        seconds = time.perf_counter() - started
        val = evaluate(model, validation, device, config.loss) if validation is not None and len(validation) else None
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=loss_sum.item() / n,
            val_loss=val["loss"] if val else None,
            val_accuracy=val.get("accuracy") if val else None,
            seconds=seconds,
            learning_rate=current_lr,
            samples_per_second=n / seconds if seconds > 0 else math.inf,
            train_accuracy=correct.item() / n if classifying and not full_batch else None,
            **meter.read(),
        )
        result.history.append(metrics)
        if stopper is not None:
            value = getattr(metrics, stopper.monitor)
            improved = best["value"] is None or (value - best["value"] > stopper.min_delta if stopper.maximize
                                                 else best["value"] - value > stopper.min_delta)
            if improved:
                best = {"value": value, "epoch": epoch, "bad_epochs": 0,
                        "model": copy.deepcopy(model.state_dict())}
            else:
                best["bad_epochs"] += 1
                result.stopped_early = best["bad_epochs"] >= stopper.patience
        if on_epoch is not None:
            on_epoch(metrics, checkpoint_at(epoch))
    if stopper is not None and best["model"] is not None:
        model.load_state_dict(best["model"])  # the best epoch's weights are the ones kept
        result.best_epoch = best["epoch"]
    result.path = path if graph_step is None or graph_step.failure is None else \
        TrainingPath("eager", graph_step.failure)
    return result


def _full_batch_step(optimizer: torch.optim.Optimizer, objective, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """One line-search step over the batch. L-BFGS wants a closure that runs backward; trainserve's Newton
    and conjugate-gradient optimizers want one that only returns the loss."""
    if getattr(optimizer, "closure_returns_loss_only", False):
        return optimizer.step(lambda: objective(xb, yb))

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = objective(xb, yb)
        loss.backward()
        return loss

    return optimizer.step(closure).detach()
