"""Hostile input against a real API process: each request an adversary sent (docs/security.md, "Hostile
input") gets its 4xx, never a 500, while the API keeps answering and its peak memory stays within a bound
set by its limits, not by what the request claims to expand to.

The API runs with an upload limit of 20 MB and a request ceiling of 8 MB, so the bound is checked against
settings an operator would choose; every bomb here expands to 256 MB or more.
"""

from __future__ import annotations

import http.client
import io
import threading
from collections.abc import Iterator
from urllib.parse import urlparse

import numpy as np
import pytest

from tests import datafiles
from tests.helpers import LOGREG_SPEC, unique
from tests.stack import Stack

pytestmark = [pytest.mark.slow]

UPLOAD_LIMIT, REQUEST_LIMIT = 20_000_000, 8_000_000
PEAK_BOUND = 250 << 20  # bytes of peak RSS above the API's size before the hostile requests


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    env = {"TRAINSERVE_HOME": str(tmp_path_factory.mktemp("hostile")),
           "TRAINSERVE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "TRAINSERVE_MAX_REQUEST_BYTES": str(REQUEST_LIMIT)}
    with Stack.start(env) as s:
        job = s.wait_for(s.http.post("/v1/jobs", json={**LOGREG_SPEC, "name": "hostile-target"}).json()["id"])
        assert job["status"] == "succeeded", s.tail_logs()
        s.job_id, s.model_id = job["id"], job["model"]["id"]
        yield s


def memory_kib(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def upload(stack: Stack, *files: tuple[str, bytes], **fields: str):
    return stack.http.post("/v1/datasets", data={"name": unique("hostile"), **fields},
                           files=[("file", f) for f in files])


def declared_but_not_sent(stack: Stack, path: str, length: int) -> tuple[int, bytes]:
    """Headers that declare ``length`` bytes of body, and none of it: the answer must come from the header."""
    url = urlparse(stack.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def npz_with_a_boolean_array() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.ones((20, 8, 8), bool), y=np.arange(20) % 10)
    return buffer.getvalue()


# Each finding: what was sent, and the status and words of the answer.
def hostile_requests(stack: Stack) -> dict[str, tuple]:
    model, job = stack.model_id, stack.job_id
    http = stack.http
    return {
        "a gzipped IDX that inflates to 1 GiB": (
            lambda: upload(stack, ("images-idx3-ubyte.gz", datafiles.gzip_bomb(1 << 30)),
                           ("labels-idx1-ubyte", datafiles.idx(np.zeros(10, np.uint8)))),
            413, "expands past the 20,000,000-byte limit"),
        "an NPZ that holds a 256 MiB array": (
            lambda: upload(stack, ("bomb.npz", datafiles.npz_bomb(1 << 26))), 413, "the arrays pass the"),
        "a ZIP of two 9000x9000 PNGs": (
            lambda: upload(stack, ("bomb.zip", datafiles.zip_with({"0/a.png": datafiles.png_header(9000, 9000),
                                                                   "1/b.png": datafiles.png_header(9000, 9000)}))),
            413, "decode past"),
        "a ZIP holding a 30000x30000 PNG": (
            lambda: upload(stack, ("bomb.zip", datafiles.zip_with({"0/a.png": datafiles.png(np.zeros((8, 8), np.uint8)),
                                                                   "1/b.png": datafiles.png_header(30000, 30000)}))),
            413, "1/b.png"),
        "IDX dimensions whose product wraps": (
            lambda: upload(stack, ("images.idx", datafiles.idx_header_only(2**31, 2**31, 4)),
                           ("labels.idx", datafiles.idx(np.zeros(10, np.uint8)))), 422, "IDX header says shape"),
        "a CSV of 99,857 columns": (
            lambda: upload(stack, ("wide.csv", ("label," + ",".join(["1"] * 99_856) + "\n").encode())), 422,
            "a CSV may have at most 65,537"),
        "a v2 gzip body that inflates to 256 MiB": (
            lambda: http.post(f"/v2/models/{model}/infer", content=datafiles.gzip_bomb(256 << 20),
                              headers={"content-encoding": "gzip"}), 413, "expands past the 8,000,000-byte limit"),
        "eight 6300x6300 PNGs on /predict": (
            lambda: http.post("/predict", data={"model": model},
                              files=[("images", (f"{i}.png", datafiles.png_header(6300, 6300), "image/png"))
                                     for i in range(8)]), 413, "TRAINSERVE_MAX_REQUEST_PIXELS"),
        "1,025 images on /predict": (
            lambda: http.post("/predict", data={"model": model},
                              files=[("images", (f"{i}.png", b"x", "image/png")) for i in range(1025)]),
            413, "more than 1024 images"),
        "booleans as pixels": (
            lambda: http.post("/predict", json={"instances": [[True] * 64], "model": model}), 422, "true or false"),
        "booleans as an NPZ's images": (lambda: upload(stack, ("b.npz", npz_with_a_boolean_array())), 422,
                                        "must be numbers, not bool"),
        "a v2 shape with a zero dimension": (
            lambda: http.post(f"/v2/models/{model}/infer",
                              json={"inputs": [{"name": "input", "datatype": "FP32", "shape": [0, 64]}]}),
            400, "shape"),
        "a non-ASCII header length on v2": (
            lambda: http.post(f"/v2/models/{model}/infer", content=b"{}",
                              headers={"inference-header-content-length": "\u00b2".encode("latin-1")}), 400,
            "Inference-Header-Content-Length"),
        "a non-ASCII Last-Event-ID": (
            lambda: http.get(f"/v1/jobs/{job}/events", headers={"last-event-id": "\u00b2".encode("latin-1")}), 422,
            "Last-Event-ID"),
        "an ?after= past the database's integers": (
            lambda: http.get(f"/v1/jobs/{job}/events", params={"after": "9" * 26}), 422, "after"),
        "a spec with an infinite gradient clip": (
            lambda: http.post("/v1/jobs", content=b'{"dataset": "digits", "architecture": {"type": "mlp"}, '
                              b'"training": {"grad_clip_norm": Infinity}}',
                              headers={"content-type": "application/json"}), 422, "finite number"),
        "an MLP of a billion parameters": (
            lambda: http.post("/v1/jobs", json={"dataset": "digits",
                                                "architecture": {"type": "mlp", "hidden_sizes": [8192] * 16}}),
            422, "TRAINSERVE_MAX_MODEL_PARAMETERS"),
        "an API key named with a NUL byte": (
            lambda: http.post("/v1/keys", json={"name": "evil\u0000key", "scopes": ["read"]}), 422, "name"),
    }


def test_every_hostile_request_gets_its_4xx_in_bounded_memory_while_the_api_answers(stack):
    api = stack.processes[0].pid
    before = memory_kib(api)["VmRSS"] << 10
    health, stop = [], threading.Event()

    def watch_health() -> None:  # the API answers others while the hostile requests run
        while not stop.is_set():
            health.append(stack.http.get("/healthz").status_code)

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    failures = {}
    try:
        for finding, (send, status, words) in hostile_requests(stack).items():
            response = send()
            message = response.text
            if response.status_code != status or words not in message:
                failures[finding] = (response.status_code, message[:300])
    finally:
        stop.set()
        watcher.join()
    assert not failures, failures
    assert health and set(health) == {200}
    status, answer = declared_but_not_sent(stack, "/predict", 100_000_000)  # a 100 MB body, declared
    assert status == 413 and b"TRAINSERVE_MAX_REQUEST_BYTES" in answer, answer
    peak = memory_kib(api)["VmHWM"] << 10
    assert peak - before < PEAK_BOUND, f"peak RSS {peak >> 20} MiB, {before >> 20} MiB before"
    assert "Traceback" not in stack.tail_logs(lines=2000)
