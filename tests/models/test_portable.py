"""TorchScript and ONNX exports match the eager model, and an export that drifts is refused."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime
import pytest
import torch

from models.portable import export
from tests.models.helpers import digits, model_and_optimizer


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


def test_an_export_beyond_the_tolerance_is_refused_with_the_difference():
    splits = digits()
    model, _, _ = model_and_optimizer(splits.train, "mlp", {"hidden_sizes": [16]}, "adam", 0.01)
    refused = export(model, "onnx", splits.test.x[:32], tolerance=0.0)
    assert not refused.ok and refused.data is None and refused.max_abs_difference > 0
    assert "more than the tolerance of 0e+00" in refused.error
