"""The Open Inference Protocol against a live `trainserve api` with trained models, spoken by the protocol's
own clients from PyPI: NVIDIA's tritonclient (HTTP with binary data on and off, and gRPC) and KServe's
InferenceRESTClient and InferenceGRPCClient. Their answers equal /predict's and /forecast's.

tritonclient's and KServe's generated gRPC modules both define the protocol's messages in the package
`inference`, which one process's protobuf registry holds only once: KServe's clients run in a process of
their own (`kserve_client.py` beside this file)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from models.datasets import load_builtin
from tests.helpers import LOGREG_SPEC, digits_test_split, free_port, solar_forecaster
from tests.stack import Stack

pytestmark = pytest.mark.slow
DIGITS = digits_test_split().x[:16, 0].numpy()  # 16 real 8x8 digits, values 0-16
LIMIT = 20_000_000  # TRAINSERVE_MAX_REQUEST_BYTES: the largest body, and what a compressed one may expand to


@dataclass
class Served:
    stack: Stack
    http: str  # host:port, as tritonclient takes it
    grpc: str
    classifier: str
    forecaster: str


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    grpc_port = free_port()
    env = {"TRAINSERVE_HOME": str(tmp_path_factory.mktemp("v2")), "TRAINSERVE_GRPC_PORT": str(grpc_port),
           "TRAINSERVE_MAX_REQUEST_BYTES": str(LIMIT)}
    with Stack.start(env) as stack:
        for spec in ({**LOGREG_SPEC, "name": "v2-digits"}, solar_forecaster("v2-solar", horizon=2)):
            job = stack.wait_for(stack.http.post("/v1/jobs", json=spec).json()["id"])
            assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"
        yield Served(stack, stack.base_url.removeprefix("http://"), f"127.0.0.1:{grpc_port}", "v2-digits", "v2-solar")


def predicted(served: Served, rows: np.ndarray) -> np.ndarray:
    """/predict's probabilities for the same digits."""
    body = served.stack.http.post("/predict", json={"instances": rows.astype(float).tolist(),
                                                    "model": served.classifier}).json()
    return np.array([p["probabilities"] for p in body["predictions"]])


CLIENTS = {"http": lambda s: httpclient.InferenceServerClient(s.http),
           "grpc": lambda s: grpcclient.InferenceServerClient(s.grpc)}
MODULES = {"http": httpclient, "grpc": grpcclient}


@pytest.mark.parametrize("protocol", CLIENTS)
def test_health_and_metadata(served, protocol):
    client = CLIENTS[protocol](served)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(served.classifier) and client.is_model_ready(served.forecaster)
    as_json = {} if protocol == "http" else {"as_json": True}  # gRPC: the messages as JSON (int64 as strings)
    server = client.get_server_metadata(**as_json)
    assert server["name"] == "trainserve" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(served.classifier, **as_json)
    for t in meta["inputs"] + meta["outputs"]:
        t["shape"] = [int(d) for d in t["shape"]]
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
    solar = client.get_model_metadata(served.forecaster, **as_json)
    assert [i["name"] for i in solar["inputs"]] == ["readings", "timestamps"]
    assert [int(d) for d in solar["inputs"][0]["shape"]] == [-1, 8, 1]
    assert [o["name"] for o in solar["outputs"]] == ["forecast", "lower", "upper"]
    with pytest.raises(InferenceServerException, match="no model"):
        client.get_model_metadata("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "UINT8", "INT64"])
@pytest.mark.parametrize("protocol", CLIENTS)
def test_infer_equals_predict(served, protocol, datatype, binary):
    if protocol == "grpc" and not binary:
        pytest.skip("gRPC sends raw contents either way")
    module, client = MODULES[protocol], CLIENTS[protocol](served)
    rows = DIGITS.astype({"FP32": np.float32, "FP64": np.float64, "UINT8": np.uint8, "INT64": np.int64}[datatype])
    pixels = module.InferInput("pixels", list(rows.shape), datatype)
    pixels.set_data_from_numpy(rows, **({"binary_data": binary} if protocol == "http" else {}))
    outputs = [module.InferRequestedOutput(name, **({"binary_data": binary} if protocol == "http" else {}))
               for name in ("label", "probabilities")]
    result = client.infer(served.classifier, [pixels], outputs=outputs, request_id="r-1")
    expected = predicted(served, DIGITS)
    assert np.allclose(result.as_numpy("probabilities"), expected, atol=1e-6)
    assert result.as_numpy("label").tolist() == expected.argmax(axis=1).tolist()
    response = result.get_response()
    response = response if protocol == "http" else {"id": response.id, "model_name": response.model_name}
    assert response["id"] == "r-1" and response["model_name"] == served.classifier


def test_all_outputs_come_back_binary_when_none_are_named(served):
    """tritonclient asks for binary_data_output when it names no output; a version is addressed too."""
    pixels = httpclient.InferInput("pixels", [2, 64], "FP32")
    pixels.set_data_from_numpy(DIGITS[:2].reshape(2, 64).astype(np.float32))
    result = httpclient.InferenceServerClient(served.http).infer(served.classifier, [pixels], model_version="1")
    assert result.as_numpy("probabilities").shape == (2, 10) and result.as_numpy("label").dtype == np.int64


@pytest.mark.parametrize("request_compression, response_compression", [("gzip", "deflate"), ("deflate", "gzip")])
def test_compressed_bodies(served, request_compression, response_compression):
    pixels = httpclient.InferInput("pixels", list(DIGITS.shape), "FP32")
    pixels.set_data_from_numpy(DIGITS.astype(np.float32))
    result = httpclient.InferenceServerClient(served.http).infer(
        served.classifier, [pixels], request_compression_algorithm=request_compression,
        response_compression_algorithm=response_compression)
    assert np.allclose(result.as_numpy("probabilities"), predicted(served, DIGITS), atol=1e-6)


def raw_infer(served: Served, header: dict, binary: bytes = b"", **headers: str) -> httpx.Response:
    body = json.dumps(header).encode()
    return served.stack.http.post(f"/v2/models/{served.classifier}/infer", content=body + binary, headers={
        "Inference-Header-Content-Length": str(len(body)), "Content-Type": "application/octet-stream", **headers})


def test_refusals_say_what_is_wrong(served):
    one = DIGITS[:1].astype(np.float32).tobytes()
    tensor = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": len(one)}}
    assert raw_infer(served, {"inputs": [tensor]}, one).status_code == 200
    cases = [
        ({"inputs": [tensor]}, one[:-4], {}, "binary_data_size 256 runs past the 252 bytes"),
        ({"inputs": [{**tensor, "parameters": {"binary_data_size": 252}}]}, one[:-4], {},
         "252 bytes of data, but shape [1, 64] of FP32 needs 256"),
        ({"inputs": [{**tensor, "datatype": "BYTES"}]}, one, {}, "datatype BYTES is not supported"),
        ({"inputs": [{**tensor, "datatype": "FP128"}]}, one, {}, "unknown datatype 'FP128'"),
        ({"inputs": [tensor]}, one + b"\0" * 8, {}, "8 bytes of binary data after the header belong to no input"),
        ({"inputs": [tensor], "outputs": [{"name": "logits"}]}, one, {}, "unknown output(s) ['logits']"),
        ({"inputs": [{**tensor, "shape": [1, 32], "parameters": {"binary_data_size": 128}}]}, one[:128], {},
         "expects 64 pixels per instance"),
        ({"inputs": [tensor]}, one, {"Content-Encoding": "br"}, "Content-Encoding 'br' is not supported"),
    ]
    for header, binary, headers, message in cases:
        response = raw_infer(served, header, binary, **headers)
        assert response.status_code in (400, 415), response.text
        assert message in response.json()["error"], (message, response.text)
    assert served.stack.http.post(f"/v2/models/{served.classifier}/infer", content=b"\x00\x01",
                                  headers={"Content-Encoding": "gzip"}).status_code == 400
    bomb = gzip.compress(b"0" * (LIMIT + 1))
    response = served.stack.http.post(f"/v2/models/{served.classifier}/infer", content=bomb,
                                      headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413 and "expands past" in response.json()["error"]

    client = grpcclient.InferenceServerClient(served.grpc)
    bad = grpcclient.InferInput("pixels", [1, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 32), np.float32))
    with pytest.raises(InferenceServerException, match="expects 64 pixels per instance") as error:
        client.infer(served.classifier, [bad])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="no model") as error:
        client.infer("no-such-model", [bad])
    assert error.value.status() == "StatusCode.NOT_FOUND"
    empty = grpcclient.InferInput("pixels", [0, 64], "FP32")
    empty.set_data_from_numpy(np.zeros((0, 64), np.float32))
    with pytest.raises(InferenceServerException, match="positive integers") as error:
        client.infer(served.classifier, [empty])
    assert error.value.status() == "StatusCode.INVALID_ARGUMENT"


def solar_readings(start: str) -> pd.DataFrame:
    frame = load_builtin("solar").frame()[["solar.current"]]
    grid = frame.resample("30min").mean()
    window = grid.loc[start:].iloc[:8]
    assert not window.isna().any().any()
    return window


@pytest.mark.parametrize("protocol", CLIENTS)
def test_a_forecaster_answers_what_forecast_answers(served, protocol):
    windows = [solar_readings("2016-11-02 09:00"), solar_readings("2016-11-03 10:00")]
    module, client = MODULES[protocol], CLIENTS[protocol](served)
    readings = np.stack([w.to_numpy(np.float32) for w in windows])  # [2, 8, 1]
    stamps = np.stack([(w.index.asi8 // 10**9).astype(np.int64) for w in windows])  # wall clock, seconds
    inputs = [module.InferInput("readings", list(readings.shape), "FP32"),
              module.InferInput("timestamps", list(stamps.shape), "INT64")]
    inputs[0].set_data_from_numpy(readings)
    inputs[1].set_data_from_numpy(stamps)
    result = client.infer(served.forecaster, inputs)
    for i, window in enumerate(windows):
        expected = served.stack.http.post("/forecast", json={
            "model": served.forecaster, "timestamps": [t.isoformat() for t in window.index],
            "values": {"solar.current": window["solar.current"].tolist()}}).json()["forecast"]
        for name, key in (("forecast", "value"), ("lower", "lower"), ("upper", "upper")):
            assert np.allclose(result.as_numpy(name)[i], [p[key] for p in expected], rtol=1e-5, atol=1e-3)
    no_clock = module.InferInput("readings", list(readings.shape), "FP32")
    no_clock.set_data_from_numpy(readings)
    with pytest.raises(InferenceServerException, match="reads the calendar"):
        client.infer(served.forecaster, [no_clock])


def test_concurrent_callers_get_their_own_rows_and_share_forward_passes(served):
    expected = predicted(served, DIGITS)
    before = batched(served)

    def call(i: int) -> tuple[int, np.ndarray]:
        row = DIGITS[i % 16 : i % 16 + 1].astype(np.float32)
        if i % 2:
            client, module = grpcclient.InferenceServerClient(served.grpc), grpcclient
        else:
            client, module = httpclient.InferenceServerClient(served.http), httpclient
        pixels = module.InferInput("pixels", [1, 8, 8], "FP32")
        pixels.set_data_from_numpy(row)
        return i, client.infer(served.classifier, [pixels]).as_numpy("probabilities")[0]

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(call, range(256)))
    for i, probabilities in answers:
        assert np.allclose(probabilities, expected[i % 16], atol=1e-6), i
    requests, passes = (after - start for after, start in zip(batched(served), before))
    assert requests == 256, "every call went through /predict's batcher"
    assert passes < requests, "concurrent callers shared forward passes"


def batched(served: Served) -> tuple[float, float]:
    """The batcher's requests and forward passes so far, from /metrics."""
    text = served.stack.http.get("/metrics").text
    value = {m.group(1): float(m.group(2)) for m in re.finditer(
        r"^trainserve_predict_batch_requests_(sum|count) ([0-9.e+]+)$", text, re.MULTILINE)}
    return value["sum"], value["count"]


def test_kserves_own_clients(served):
    script = Path(__file__).with_name("kserve_client.py")
    root = script.parents[2]
    out = subprocess.run([sys.executable, str(script), served.stack.base_url, served.grpc, served.classifier],
                         capture_output=True, text=True, timeout=120, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stdout + out.stderr
    answers = json.loads(out.stdout.strip().splitlines()[-1])
    expected = predicted(served, DIGITS[:4])
    for via in ("rest", "grpc"):
        assert np.allclose(np.array(answers[via]["probabilities"]).reshape(4, 10), expected, atol=1e-6), via
        assert answers[via]["model_name"] == served.classifier
