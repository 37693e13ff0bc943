"""TorchScript and ONNX exports match the eager model, and an export that drifts is refused."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime
import pytest
import torch

from models.portable import export
from tests.models.helpers import digits, model_and_optimizer


@pytest.mark.slow  # the ONNX exporter takes seconds per model
@pytest.mark.parametrize("architecture,params", [("cnn", {"channels": [4, 8]}), ("lstm", {"hidden_size": 16})])
def test_exports_run_in_their_own_runtimes_and_match(architecture, params):
    splits = digits()
    model, _, _ = model_and_optimizer(splits.train, architecture, params, "adam", 0.01)
    x = splits.test.x[:64]
    expected = torch.softmax(model.eval()(x), 1).detach().numpy()
    scripted = export(model, "torchscript", x)
    assert scripted.ok and scripted.max_abs_difference <= 1e-4
    got = torch.softmax(torch.jit.load(io.BytesIO(scripted.data))(x), 1).detach().numpy()
    assert np.allclose(got, expected, atol=1e-5)
    onnx = export(model, "onnx", x)
    assert onnx.ok and onnx.max_abs_difference <= 1e-4
    session = onnxruntime.InferenceSession(onnx.data)
    logits = session.run(["logits"], {"pixels": x[:7].numpy()})[0]  # any batch size
    assert np.allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), expected[:7], atol=1e-5)


class BranchesOnTheBatch(torch.nn.Module):
    """Scales its logits when the batch's pixel sum is positive: a trace keeps only the branch its example
    took, so the traced model drifts from the eager one on any batch that takes the other."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x.flatten(1))
        return logits * 3 if x.sum() > 0 else logits


def test_an_export_beyond_the_tolerance_is_refused_with_the_difference():
    torch.manual_seed(0)
    # The first two rows (the trace's example) sum above zero, the whole batch below.
    x = torch.cat([torch.ones(2, 1, 8, 8), -torch.ones(6, 1, 8, 8)])
    refused = export(BranchesOnTheBatch(), "torchscript", x)
    assert not refused.ok and refused.data is None and refused.max_abs_difference > 1e-3
    assert refused.error.startswith(f"outputs differ from the eager model by up to {refused.max_abs_difference:.2e}")
    assert "more than the tolerance of 1e-04" in refused.error


def test_a_forecaster_is_compared_on_its_outputs_not_a_softmax():
    """A softmax over one output is always 1, which would hide any difference: forecasters are compared on
    the outputs themselves."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1))
    x = torch.randn(16, 12, 1)
    made = export(model, "onnx", x, task="forecast")
    assert made.ok, made.error
    session = onnxruntime.InferenceSession(made.data)
    assert [i.name for i in session.get_inputs()] == ["window"] and session.get_outputs()[0].name == "forecast"
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(session.run(["forecast"], {"window": x.numpy()})[0], expected, atol=1e-5)
    drifting = export(BranchesOnTheBatch(), "torchscript", torch.cat([torch.ones(2, 1, 8, 8), -torch.ones(6, 1, 8, 8)]),
                      task="forecast")
    assert not drifting.ok and drifting.max_abs_difference > 1e-3
