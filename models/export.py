"""Saving and loading trained models as one plain dict: ``{"config": ..., "state_dict": ...}``.

Only tensors and plain Python values go in, so ``torch.load(weights_only=True)`` reads it back without
running any pickled code.
"""

from __future__ import annotations

import io

import torch
from torch import nn

from models.architectures import ModelConfig, build_model


def model_to_bytes(model: nn.Module, config: ModelConfig) -> bytes:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": "trainserve.model/1", "config": config.to_dict(), "state_dict": state}, buffer)
    return buffer.getvalue()


def model_from_bytes(data: bytes, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelConfig]:
    saved = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    config = ModelConfig.from_dict(saved["config"])
    model = build_model(config)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), config


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save(tensor.detach().cpu().contiguous(), buffer)
    return buffer.getvalue()


def tensor_from_bytes(data: bytes) -> torch.Tensor:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def checkpoint_to_bytes(checkpoint: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def checkpoint_from_bytes(data: bytes) -> dict:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
