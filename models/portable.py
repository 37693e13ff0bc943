"""Exports of a trained model for runtimes without trainserve: TorchScript and ONNX, each checked against
the eager model on held-out inputs."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

EXPORT_FORMATS = ("torchscript", "onnx")
FILE_SUFFIX = {"pt": "pt", "torchscript": "torchscript.pt", "onnx": "onnx"}  # "pt": the state_dict file
DEFAULT_TOLERANCE = 1e-4  # on output probabilities


@dataclass
class Export:
    format: str
    data: bytes | None
    max_abs_difference: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _torchscript(model: nn.Module, example: torch.Tensor) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still what many runtimes load
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        data = buffer.getvalue()
        loaded = torch.jit.load(io.BytesIO(data))
    return data, lambda x: loaded(torch.from_numpy(x)).detach().numpy()


def _onnx(model: nn.Module, example: torch.Tensor) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    import onnxruntime

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The exporter reports its progress on stdout; a worker's log has no use for it.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                    input_names=["pixels"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    data = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return data, lambda x: session.run(None, {"pixels": x})[0]


EXPORTERS = {"torchscript": _torchscript, "onnx": _onnx}


def export(model: nn.Module, fmt: str, held_out: torch.Tensor, tolerance: float = DEFAULT_TOLERANCE) -> Export:
    """Export ``model`` (on the CPU, in eval mode) and compare the export's output probabilities with the
    eager model's on ``held_out``; an export off by more than ``tolerance`` is refused, with the reason."""
    model = model.cpu().eval()
    x = held_out.cpu().float()
    try:
        data, run = EXPORTERS[fmt](model, x[:2])
        with torch.inference_mode():
            expected = torch.softmax(model(x), dim=1).numpy()
        got = torch.softmax(torch.from_numpy(np.asarray(run(x.numpy()))), dim=1).numpy()
        difference = float(np.abs(got - expected).max())
    except Exception as exc:  # an exporter that cannot handle the model fails the export, never the job
        return Export(fmt, None, None, f"{type(exc).__name__}: {exc}"[:500])
    if difference > tolerance:
        return Export(fmt, None, difference, f"outputs differ from the eager model by up to {difference:.2e}, "
                                             f"more than the tolerance of {tolerance:.0e}")
    return Export(fmt, data, difference)
