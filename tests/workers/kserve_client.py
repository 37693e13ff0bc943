"""KServe's InferenceRESTClient (v2) and InferenceGRPCClient against a live trainserve, in a process of their
own (see test_inference_protocol.py). Prints one JSON line: each client's probabilities and model name.

    python tests/workers/kserve_client.py http://127.0.0.1:8000 127.0.0.1:8081 <model>
"""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.helpers import digits_test_split


async def main(base_url: str, grpc_url: str, model: str) -> dict:
    rows = digits_test_split().x[:4, 0].numpy().astype(np.float32)
    answers = {}
    for via in ("rest", "grpc"):
        pixels = InferInput("pixels", list(rows.shape), "FP32")
        pixels.set_data_from_numpy(rows, binary_data=via == "rest")
        request = InferRequest(model_name=model, infer_inputs=[pixels], request_id=f"kserve-{via}")
        if via == "rest":
            client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
            response = await client.infer(base_url, request, model_name=model)
            await client.close()
        else:
            client = InferenceGRPCClient(grpc_url, retries=0)
            response = await client.infer(request)
            await client.close()
        output = response.get_output_by_name("probabilities")
        answers[via] = {"probabilities": output.as_numpy().reshape(-1).tolist(), "model_name": response.model_name}
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:4]))))
