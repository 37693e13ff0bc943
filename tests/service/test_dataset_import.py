"""Importing a dataset from a URL, served by an HTTP server this test starts on 127.0.0.1. Imports fetch only
from public addresses unless the operator opens a host, so the tests open 127.0.0.1 (and localhost)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from tests import datafiles
from tests.helpers import artifact_files, settings_with

X, Y = datafiles.digits(300)
FILES = {
    "/digits.npz": datafiles.npz(X, Y),
    "/images.gz": datafiles.idx(X, gz=True),
    "/labels.gz": datafiles.idx(Y, gz=True),
    "/more-images.gz": datafiles.idx(datafiles.digits(400)[0][300:], gz=True),  # names that do not say test
    "/more-labels.gz": datafiles.idx(datafiles.digits(400)[1][300:], gz=True),
    "/power.csv": datafiles.timeseries_csv(48),
    "/broken.csv": b"label,a,b,c,d\n1,0,0,0,x\n",
    "/big.npz": b"\0" * 300_000,
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/redirect/") or self.path == "/moved.npz":  # elsewhere, or home
            self.send_response(302)
            target = self.path.removeprefix("/redirect/")
            self.send_header("Location", "/digits.npz" if self.path == "/moved.npz" else
                             f"http://{target.replace('PORT', str(self.server.server_address[1]))}/digits.npz")
            self.end_headers()
            return
        if self.path == "/slow.npz":  # a trickle: one byte every 0.2 s
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            return
        if self.path == "/trickle-headers.npz":  # headers a byte every 0.2 s: no single read ever times out
            try:
                for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 300:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass
            self.close_connection = True
            return
        if self.path == "/endless.npz":  # no Content-Length; more than any limit
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(100):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            return
        data = FILES.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def importing(runtime, migrated) -> Iterator[TestClient]:
    with TestClient(create_app(settings_with(runtime, import_allowed_hosts="127.0.0.1"), reconcile=False,
                               tune_process=False)) as c:
        yield c


@pytest.fixture
def limited_client(runtime, migrated) -> Iterator[TestClient]:
    settings = settings_with(runtime, max_upload_bytes=200_000, import_timeout_seconds=2, import_allowed_hosts="127.0.0.1")
    with TestClient(create_app(settings, reconcile=False, tune_process=False)) as c:
        yield c


def name() -> str:
    return f"imported-{uuid.uuid4().hex[:8]}"


def test_import_npz_idx_pair_and_time_series(importing, server, run_job):
    client = importing
    npz_name = name()
    response = client.post("/v1/datasets/import", json={"name": npz_name, "url": f"{server}/digits.npz"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["source"] == "import" and body["source_url"] == f"{server}/digits.npz"
    assert body["files"][0]["name"] == "digits.npz" and body["stats"]["samples"] == 300
    again = client.post("/v1/datasets/import", json={"name": npz_name, "url": f"{server}/digits.npz"})
    assert again.status_code == 200 and again.json()["id"] == body["id"]

    idx = client.post("/v1/datasets/import", json={"name": name(), "url": f"{server}/images.gz",
                                                   "labels_url": f"{server}/labels.gz"})
    assert idx.status_code == 201 and idx.json()["format"] == "idx" and idx.json()["stats"]["samples"] == 300
    assert idx.json()["has_test_set"] is False
    with_test = client.post("/v1/datasets/import", json={
        "name": name(), "url": f"{server}/images.gz", "labels_url": f"{server}/labels.gz",
        "test_url": f"{server}/more-images.gz", "test_labels_url": f"{server}/more-labels.gz"})
    assert with_test.status_code == 201, with_test.text
    assert with_test.json()["has_test_set"] is True and with_test.json()["stats"]["samples"] == 300
    assert with_test.json()["stats"]["test"]["samples"] == 100
    assert [f["name"] for f in with_test.json()["files"]] == ["images.gz", "labels.gz", "test-more-images.gz",
                                                              "test-more-labels.gz"]
    series = client.post("/v1/datasets/import", json={"name": name(), "url": f"{server}/power.csv"})
    assert series.status_code == 201 and series.json()["task"] == "forecast"

    job = client.post("/v1/jobs", json={"dataset": f"{npz_name}@1", "architecture": {"type": "logistic_regression"},
                                        "optimizer": {"type": "adam"}, "training": {"epochs": 3}}).json()
    run_job(job["id"])
    assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"


@pytest.mark.parametrize("path, status, message", [
    ("/big.npz", 413, "over the 200,000-byte limit"),
    ("/endless.npz", 413, "sent more than the 200,000-byte limit"),
    ("/slow.npz", 400, "did not finish sending within 2 s"),
    ("/missing.npz", 400, "answered HTTP 404"),
    ("/broken.csv", 422, "row 1 (line 2), column 'd'"),
])
def test_import_refuses_what_it_cannot_take(runtime, limited_client, server, path, status, message):
    before = artifact_files(runtime)
    response = limited_client.post("/v1/datasets/import", json={"name": name(), "url": f"{server}{path}"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert artifact_files(runtime) == before


def test_import_needs_an_http_url(importing):
    client = importing
    response = client.post("/v1/datasets/import", json={"name": name(), "url": "file:///etc/passwd"})
    assert response.status_code == 422 and response.json()["error"]["details"][0]["field"] == "url"
    with socket.socket() as closed:  # bound, not listening: connections to it are refused, and the port is ours
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/none.npz"
        response = client.post("/v1/datasets/import", json={"name": name(), "url": url})
    assert response.status_code == 400 and "could not download" in response.json()["error"]["message"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/digits.npz", "http://10.20.30.40/x.npz",
                                 "http://169.254.169.254/latest/x.npz", "http://[::1]:{port}/digits.npz",
                                 "http://[64:ff9b::a14:1e28]/x.npz",  # NAT64 of 10.20.30.40
                                 "http://[2002:a9fe:a9fe::1]/x.npz",  # 6to4 of 169.254.169.254
                                 "http://[::ffff:127.0.0.1]:{port}/digits.npz"])
def test_import_refuses_internal_addresses(runtime, client, server, url):
    """Loopback, private and link-local addresses are refused before any connection is made."""
    port = server.rsplit(":", 1)[1]
    before = artifact_files(runtime)
    response = client.post("/v1/datasets/import", json={"name": name(), "url": url.format(port=port)})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert "imports fetch only from public addresses" in message and "TRAINSERVE_IMPORT_ALLOWED_HOSTS" in message
    assert artifact_files(runtime) == before


@pytest.mark.parametrize(("target", "kind"), [("127.0.0.1:PORT", "loopback"), ("10.20.30.40", "private"),
                                              ("169.254.169.254", "link-local")])
def test_a_redirect_to_an_internal_address_is_refused(runtime, migrated, server, target, kind):
    """The first hop is a host the operator opened (localhost); its redirect to an internal address is not."""
    port = server.rsplit(":", 1)[1]
    with TestClient(create_app(settings_with(runtime, import_allowed_hosts="localhost"), reconcile=False,
                               tune_process=False)) as client:
        response = client.post("/v1/datasets/import",
                               json={"name": name(), "url": f"http://localhost:{port}/redirect/{target}"})
        assert response.status_code == 400, response.text
        assert f"a {kind} address" in response.json()["error"]["message"]
        home = client.post("/v1/datasets/import", json={"name": name(), "url": f"http://localhost:{port}/moved.npz"})
        assert home.status_code == 201 and home.json()["stats"]["samples"] == 300, "a redirect within it is followed"


@pytest.mark.slow
@pytest.mark.parametrize("migrated", ["sqlite"], indirect=True)  # downloading is the same on either database
def test_an_import_ends_at_its_deadline_however_slowly_the_server_sends_and_others_are_answered_meanwhile(
        limited_client, server):
    """Six imports from a server that trickles its headers (a byte every 0.2 s, for a minute) against a 2 s
    deadline: each ends at the deadline, four at a time in the import threads, and the API answers other
    requests while they wait."""
    client = limited_client
    answers, started = [], time.monotonic()

    def trickle() -> None:
        response = client.post("/v1/datasets/import", json={"name": name(), "url": f"{server}/trickle-headers.npz"})
        answers.append((response, time.monotonic() - started))

    threads = [threading.Thread(target=trickle) for _ in range(6)]
    for t in threads:
        t.start()
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200 and not answers, "answered while every import was still waiting"
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 6
    for response, elapsed in answers:
        assert response.status_code == 400 and "did not finish sending within 2 s" in response.text
        assert elapsed < 20, "the deadline covers the headers too"
