"""The benchmark's MLP as an MLServer custom runtime (mlserver.MLModel), as its docs write one: TorchScript
in PyTorch, v2 JSON. Runs in a virtual environment of its own (bench/peers.py makes it)."""

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

torch.set_num_threads(1)


class MLP(MLModel):
    async def load(self) -> bool:
        self.module = torch.jit.load(self.settings.parameters.uri).eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        with torch.inference_mode():
            probabilities = torch.softmax(self.module(torch.from_numpy(x)), dim=1).numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", probabilities)])
