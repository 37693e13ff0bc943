"""Exports of a trained model for runtimes without trainserve: TorchScript and ONNX, each checked against
the eager model on held-out inputs.

A classifier is compared on its output probabilities; a forecaster on its outputs (scaled forecasts), since a
softmax over a forecaster's outputs would hide any difference.
"""

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
DEFAULT_TOLERANCE = 1e-4  # on output probabilities (classifiers) or outputs (forecasters)
# The ONNX graph's input and output names, by task.
ONNX_NAMES = {"classification": ("pixels", "logits"), "forecast": ("window", "forecast")}


@dataclass
class Export:
    format: str
    data: bytes | None
    max_abs_difference: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _torchscript(model: nn.Module, example: torch.Tensor, task: str) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    with warnings.catch_warnings():  # TorchScript is deprecated upstream, and still what many runtimes load
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, example)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        data = buffer.getvalue()
        loaded = torch.jit.load(io.BytesIO(data))
    return data, lambda x: loaded(torch.from_numpy(x)).detach().numpy()


def _onnx(model: nn.Module, example: torch.Tensor, task: str) -> tuple[bytes, Callable[[np.ndarray], np.ndarray]]:
    import onnxruntime

    input_name, output_name = ONNX_NAMES[task]
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The exporter reports its progress on stdout; a worker's log has no use for it.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                    input_names=[input_name], output_names=[output_name],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    data = program.model_proto.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return data, lambda x: session.run(None, {input_name: x})[0]


EXPORTERS = {"torchscript": _torchscript, "onnx": _onnx}


def _compared(outputs: np.ndarray, task: str) -> np.ndarray:
    if task == "classification":
        return torch.softmax(torch.from_numpy(np.asarray(outputs, dtype=np.float32)), dim=1).numpy()
    return np.asarray(outputs, dtype=np.float32)


def export(model: nn.Module, fmt: str, held_out: torch.Tensor, tolerance: float = DEFAULT_TOLERANCE,
           task: str = "classification") -> Export:
    """Export ``model`` (on the CPU, in eval mode) and compare the export's outputs with the eager model's on
    ``held_out`` (probabilities for a classifier, the outputs themselves for a forecaster); an export off by
    more than ``tolerance`` is refused, with the reason."""
    model = model.cpu().eval()
    x = held_out.cpu().float()
    if len(x) == 0:
        return Export(fmt, None, None, "no held-out inputs to check the export against")
    try:
        example = x[:2] if len(x) > 1 else torch.cat([x, x])  # two rows: the batch size stays free
        data, run = EXPORTERS[fmt](model, example, task)
        with torch.inference_mode():
            expected = _compared(model(x).numpy(), task)
        got = _compared(run(x.numpy()), task)
        difference = float(np.abs(got - expected).max())
    except Exception as exc:  # an exporter that cannot handle the model fails the export, never the job
        return Export(fmt, None, None, f"{type(exc).__name__}: {exc}"[:500])
    if not difference <= tolerance:  # NaN included
        return Export(fmt, None, difference, f"outputs differ from the eager model by up to {difference:.2e}, "
                                             f"more than the tolerance of {tolerance:.0e}")
    return Export(fmt, data, difference)
