"""Telemetry end to end, on real API and worker processes: one trace from ``POST /v1/jobs`` through the
Celery message to the worker's spans, received over OTLP by a collector in this test; a sampled /predict
with its forward pass; JSON log lines with their ids; the worker's and the API's Prometheus metrics."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import threading
import uuid
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import LOGREG_SPEC, digits_test_split, free_port
from tests.stack import CLI, Stack

pytestmark = pytest.mark.slow
EPOCHS = 3


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict


def _value(any_value):
    return getattr(any_value, any_value.WhichOneof("value")) if any_value.WhichOneof("value") else None


class Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver (protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.add(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            service = next(_value(a.value) for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                spans += [Span(service, s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                               {a.key: _value(a.value) for a in s.attributes}) for s in scope_spans.spans]
        with self.lock:
            self.spans += spans

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def collector():
    server = Collector()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, collector):
    ports = {"TRAINSERVE_WORKER_METRICS_PORT": str(free_port()), "TRAINSERVE_API_METRICS_PORT": str(free_port())}
    env = {"TRAINSERVE_HOME": str(tmp_path_factory.mktemp("telemetry")), "TRAINSERVE_LOG_FORMAT": "json",
           "TRAINSERVE_TRACE_INFERENCE_SHARE": "0",  # inference traced only when the caller asks
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
           "OTEL_BSP_SCHEDULE_DELAY": "100", **ports}
    with Stack.start(env) as stack:
        stack.ports = {k: int(v) for k, v in ports.items()}
        yield stack


def json_lines(stack: Stack, command: str) -> list[dict]:
    lines = []
    for log, name in zip(stack.logs, stack.commands):
        if name == command:
            lines += [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return lines


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url, timeout=10).raise_for_status().text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def train(stack: Stack) -> dict:
    spec = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": EPOCHS}}
    job = stack.http.post("/v1/jobs", json=spec).raise_for_status().json()
    job = stack.wait_for(job["id"])
    assert job["status"] == "succeeded", job
    return job


def test_one_trace_runs_from_the_request_through_the_worker(stack, collector):
    worker_metrics = f"http://127.0.0.1:{stack.ports['TRAINSERVE_WORKER_METRICS_PORT']}/metrics"
    def serving():
        try:
            return scrape(worker_metrics)
        except httpx.ConnectError:  # the worker serves them once it consumes
            return None

    before = stack.wait_until(serving, "the worker's metrics")
    job = train(stack)

    submitted = stack.wait_until(lambda: collector.named("POST /v1/jobs") or None, "the request's span")
    assert len(submitted) == 1
    trace_id = submitted[0].trace_id
    wanted = {"claim", "data load", "train", "epoch", "checkpoint", "evaluate", "registration", "export"}

    def whole_trace():
        spans = collector.trace(trace_id)
        names = [s.name for s in spans]
        exported = [s for s in spans if s.name == "export" and "trainserve.format" in s.attributes]
        # A parent is sent when it ends, after its children: wait for the tree to close, or a loaded machine
        # sees the export worker's spans before the task span they hang under.
        closed = len([s for s in spans if s.parent_id not in {p.span_id for p in spans}]) == 1
        return spans if wanted <= set(names) and len(exported) == 2 and names.count("epoch") == EPOCHS and closed \
            else None

    spans = stack.wait_until(whole_trace, "the job's whole trace")
    assert {s.service for s in spans} == {"trainserve-api", "trainserve-worker"}
    ids = {s.span_id for s in spans}
    assert [s.name for s in spans if s.parent_id not in ids] == ["POST /v1/jobs"], "one tree, one root"
    assert sorted(s.attributes["trainserve.epoch"] for s in spans if s.name == "epoch") == [1, 2, 3]
    by_id = {s.span_id: s for s in spans}
    train_span = next(s for s in spans if s.name == "train")
    assert all(s.parent_id == train_span.span_id for s in spans if s.name == "epoch")
    assert {by_id[s.parent_id].name for s in spans if s.name == "claim"} == {"run/trainserve.train_job"}, \
        "the worker's spans hang under Celery's, which hang under the request's"
    assert sorted(s.attributes["trainserve.format"] for s in spans if s.name == "export" and
                  "trainserve.format" in s.attributes) == ["onnx", "torchscript"]

    # The worker's log lines carry the job's id and its trace.
    succeeded = [line for line in json_lines(stack, "worker") if line["message"].startswith(f"job {job['id']}: succ")]
    assert len(succeeded) == 1 and succeeded[0]["job_id"] == job["id"] and succeeded[0]["trace_id"] == trace_id

    # And its metrics count the job, its epochs and its checkpoints.
    after = scrape(worker_metrics)
    labels = (("architecture", "logistic_regression"), ("device", "cpu"))

    def delta(name: str, extra: tuple = ()) -> float:
        key = (name, tuple(sorted(labels + extra)))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("trainserve_worker_jobs_started_total") == 1
    assert delta("trainserve_worker_jobs_finished_total", (("outcome", "succeeded"),)) == 1
    assert delta("trainserve_worker_epoch_seconds_count") == EPOCHS
    assert delta("trainserve_worker_checkpoint_seconds_count") == EPOCHS
    metrics = stack.http.get(f"/v1/jobs/{job['id']}/metrics").json()["items"]
    trained = sum(m["samples_per_second"] * m["seconds"] for m in metrics)
    assert delta("trainserve_worker_samples_total") == pytest.approx(trained, rel=1e-6)
    assert after.get(("trainserve_worker_jobs_running", labels), 0) == 0


def test_a_sampled_predict_shows_its_forward_pass(stack, collector):
    model = train(stack)["model"]["id"]
    pixels = digits_test_split().x[:2, 0].tolist()
    for _ in range(5):  # not traced: the share is 0 and the caller sent no traceparent
        stack.http.post("/predict", json={"instances": pixels, "model": model}).raise_for_status()
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    r = stack.http.post("/predict", json={"instances": pixels, "model": model},
                        headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    assert r.status_code == 200

    def traced():
        spans = collector.trace(trace_id)
        return spans if {"POST /predict", "forward pass"} <= {s.name for s in spans} else None

    spans = stack.wait_until(traced, "the traced /predict")
    server = next(s for s in spans if s.name == "POST /predict")
    forward = next(s for s in spans if s.name == "forward pass")
    assert server.parent_id == parent and forward.parent_id == server.span_id
    assert forward.attributes["trainserve.pass_rows"] >= 2
    assert len(collector.named("POST /predict")) == 1, "the untraced requests made no span"


def test_log_lines_are_json_with_the_request_and_key_ids(stack):
    r = stack.http.get("/v1/jobs", headers={"X-Request-ID": "telemetry-test-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "telemetry-test-1"
    made = stack.http.get("/v1/datasets").headers["x-request-id"]
    assert len(made) == 32 and made != "telemetry-test-1"

    def line_of(request_id: str):
        return next((line for line in json_lines(stack, "api") if line.get("request_id") == request_id), None)

    line = stack.wait_until(lambda: line_of("telemetry-test-1"), "the request's access log line")
    assert line["logger"] == "uvicorn.access" and len(line["trace_id"]) == 32 and line["key_id"] is None
    assert {"time", "level", "message", "job_id"} <= set(line)

    # Where keys are required, the line names the key's id, never the key.
    keyed = stack.another_api(TRAINSERVE_AUTH="required", TRAINSERVE_API_METRICS_PORT="0")
    token = subprocess.run([*CLI, "keys", "create", "--name", "logs", "--scopes", "read"], env=stack.env,
                           check=True, capture_output=True, text=True).stdout.strip()
    listed = subprocess.run([*CLI, "keys", "list"], env=stack.env, check=True, capture_output=True,
                            text=True).stdout
    keyed.get("/v1/jobs", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "telemetry-test-2"})
    line = stack.wait_until(lambda: line_of("telemetry-test-2"), "the keyed request's log line")
    assert line["key_id"] and str(uuid.UUID(line["key_id"])) in listed
    assert not any(token in log.read_text() for log in stack.logs), "the key itself is never logged"


def test_the_api_serves_its_metrics_on_the_scrape_port_too(stack):
    stack.http.get("/v1/jobs").raise_for_status()
    samples = scrape(f"http://127.0.0.1:{stack.ports['TRAINSERVE_API_METRICS_PORT']}/metrics")
    assert samples[("trainserve_http_requests_total",
                    (("method", "GET"), ("route", "/v1/jobs"), ("status", "200")))] >= 1
    assert ("trainserve_queue_oldest_job_age_seconds", ()) in samples


def test_tracing_is_off_without_an_exporter():
    """No OTEL_* exporter setting: no provider, and the spans are OpenTelemetry's no-op ones."""
    script = ("from service.observability import tracing; from service.main import create_app; app = create_app(); "
              "print(tracing.configure('x') is None, app.trace_share)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([CLI[0], "-c", script], env=env, check=True, capture_output=True, text=True).stdout
    assert out.split() == ["True", "None"]
