"""Image augmentation on the training device: random shifts, small rotations and scaling, one affine
transform per sample, applied to a whole batch at once with ``affine_grid``/``grid_sample``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class AugmentConfig:
    shift: float = 0.0  # largest shift, as a fraction of the image's width and height
    rotation: float = 0.0  # largest rotation, in degrees either way
    scale: float = 0.0  # largest relative change of size: 0.1 scales by 0.9 to 1.1

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.rotation > 0 or self.scale > 0


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, background: float) -> torch.Tensor:
    """Transform a batch of images (N, C, H, W); uncovered pixels get the ``background`` value.

    The random parameters come from ``generator`` (on the CPU), so a checkpoint that saves its state
    resumes with the same augmentations."""
    n = x.shape[0]
    u = (torch.rand((n, 4), generator=generator) * 2 - 1).to(x.device, x.dtype)  # uniform in [-1, 1)
    angle = u[:, 0] * math.radians(cfg.rotation)
    scale = 1 + u[:, 1] * cfg.scale
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # affine_grid works in [-1, 1] coordinates: a shift of s of the width is 2*s there
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * 2 * cfg.shift], 1),
                         torch.stack([sin, cos, u[:, 3] * 2 * cfg.shift], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
