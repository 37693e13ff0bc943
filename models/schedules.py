"""Learning-rate schedules by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.errors import ConfigError


@dataclass
class ScheduleConfig:
    type: str  # "step", "cosine" or "one_cycle"
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.1  # step: factor at each decay
    min_lr: float = 0.0  # cosine: the floor

    @property
    def per_batch(self) -> bool:
        return self.type == "one_cycle"


def build_scheduler(cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, lr: float, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.type == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.type == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
    if cfg.type == "one_cycle":  # learning_rate is the peak; stepped after every batch
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch)
    raise ConfigError(f"unknown schedule {cfg.type!r}; valid: step, cosine, one_cycle")
