"""Claims about the real server, checked over real sockets against real `trainserve api` processes: a body
over the limit is refused before it is read, concurrent connections each get their own answers, and an
alias moved through one API replica is seen by another within its cache time."""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from tests.helpers import LOGREG_SPEC, digits_test_split, unique
from tests.stack import Stack

pytestmark = pytest.mark.slow
LIMIT = 100_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    env = {"TRAINSERVE_HOME": str(tmp_path_factory.mktemp("server")), "TRAINSERVE_MAX_UPLOAD_BYTES": str(LIMIT)}
    with Stack.start(env) as s:
        yield s


def trained(stack: Stack, name: str) -> dict:
    job = stack.wait_for(stack.http.post("/v1/jobs", json={**LOGREG_SPEC, "name": name}).json()["id"])
    assert job["status"] == "succeeded", f"{job['error']}\n{stack.tail_logs()}"
    return job["model"]


def connect(stack: Stack) -> socket.socket:
    url = urlparse(stack.base_url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def read_status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return int(head.split(b" ", 2)[1])


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(stack):
    with connect(stack) as sock:
        sock.sendall(f"POST /v1/datasets HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     f"Content-Length: {10**10}\r\n\r\n".encode())  # 10 GB announced, none of it sent
        assert read_status(sock) == 413


def test_a_chunked_body_is_refused_while_it_is_still_being_sent(stack):
    """A body without a length is counted as it arrives: the server answers 413 while the client is still
    sending, long before the body would end. (What the client has sent includes what the two kernels buffer
    on loopback, a few megabytes, so the count says when the answer came, not how much the server read.)"""
    chunk, cap = b"\0" * 16384, 64 * 2**20
    sent, answered = 0, False
    with connect(stack) as sock:
        sock.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        part = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.npz\"\r\n\r\n"
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        try:
            while sent < cap and not (answered := bool(select.select([sock], [], [], 0)[0])):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):  # the server answered and closed the connection
            answered = True
        assert answered, f"no answer after {sent:,} bytes of a body that never ends"
        assert read_status(sock) == 413


def test_concurrent_connections_each_get_their_own_answers(stack):
    model = trained(stack, unique("server"))
    test = digits_test_split()
    bodies = [{"instances": [image.tolist()], "model": model["id"], "top_k": 1 + i % 4}
              for i, image in enumerate(test.x.numpy()[:24, 0])]
    bodies.insert(9, {"instances": [[99.0] * 64], "model": model["id"]})
    alone = [stack.http.post("/predict", json=body) for body in bodies]

    async def together() -> list[httpx.Response]:
        clients = [httpx.AsyncClient(base_url=stack.base_url, timeout=30) for _ in bodies]  # a connection each
        try:
            return await asyncio.gather(*(c.post("/predict", json=b) for c, b in zip(clients, bodies)))
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    for one, concurrent in zip(alone, asyncio.run(together())):
        assert concurrent.status_code == one.status_code, concurrent.text
        if one.status_code != 200:
            assert concurrent.json() == one.json()
            continue
        a, b = one.json()["predictions"][0], concurrent.json()["predictions"][0]
        assert a["label"] == b["label"] and [t["label"] for t in a["top_k"]] == [t["label"] for t in b["top_k"]]
        assert np.allclose(a["probabilities"], b["probabilities"], atol=2e-6)


def test_another_replica_sees_an_alias_move_within_its_cache_time(stack):
    name = unique("replica")
    for _ in range(2):
        trained(stack, name)
    assert stack.http.put(f"/v1/models/{name}/aliases/production", json={"version": 1}).status_code == 200
    default = {"TRAINSERVE_DEFAULT_CLASSIFIER": f"{name}@production"}
    trusting = stack.another_api(TRAINSERVE_REF_CACHE_SECONDS="60", **default)
    brief = stack.another_api(TRAINSERVE_REF_CACHE_SECONDS="0.5", **default)

    def version(client: httpx.Client, body: dict) -> int:
        r = client.post("/predict", json={"instances": [[[0.0] * 8] * 8], **body})
        assert r.status_code == 200, r.text
        return r.json()["model"]["version"]

    try:
        assert version(trusting, {}) == version(brief, {}) == 1, "the default route is the alias"
        assert stack.http.put(f"/v1/models/{name}/aliases/production", json={"version": 2}).status_code == 200
        assert version(stack.http, {"model": f"{name}@production"}) == 2, "the replica that moved it: at once"
        assert version(trusting, {}) == 1, "another replica, within its cache time: the old version"
        stack.wait_until(lambda: version(brief, {}) == 2 or None, what="the move seen after 0.5 s", timeout=30)
    finally:
        trusting.close()
        brief.close()
