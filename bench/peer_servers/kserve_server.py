"""The benchmark's MLP on KServe's Python model server (kserve.ModelServer), as its docs write a custom model:
TorchScript in PyTorch, v1 `{"instances"}` and v2 (JSON and binary tensor data) on one predict method.
Runs in a virtual environment of its own (bench/peers.py makes it); imports nothing from trainserve.

    python kserve_server.py MODEL.pt HTTP_PORT GRPC_PORT WORKERS
"""

import json
import sys
import uuid

import kserve
import numpy as np
import torch
from kserve import InferOutput, InferRequest, InferResponse

torch.set_num_threads(1)


class MLP(kserve.Model):
    def __init__(self, path: str) -> None:
        super().__init__("mlp")
        self.path, self.module = path, None  # loaded in each process: with workers > 1 the model is pickled
        self.ready = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.module is None:
            self.module = torch.jit.load(self.path).eval()
        with torch.inference_mode():
            return torch.softmax(self.module(torch.from_numpy(x)), dim=1).numpy()

    def predict(self, payload, headers=None, response_headers=None):
        if isinstance(payload, InferRequest):
            probabilities = self.forward(payload.inputs[0].as_numpy().astype(np.float32))
            output = InferOutput("probabilities", list(probabilities.shape), "FP32")
            binary = bool(payload.request_outputs and payload.request_outputs[0].parameters
                          and payload.request_outputs[0].parameters.get("binary_data"))
            output.set_data_from_numpy(probabilities, binary_data=binary)
            return InferResponse(payload.id or str(uuid.uuid4()), self.name, [output], use_binary_outputs=binary)
        if isinstance(payload, (bytes, bytearray)):  # what v1 hands predict() with workers > 1
            payload = json.loads(payload)
        probabilities = self.forward(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": probabilities.tolist()}


if __name__ == "__main__":
    path, http_port, grpc_port, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=workers,
                       enable_latency_logging=False).start([MLP(path)])
