"""GET /v1/jobs/{id}/events live, against real API and worker processes on the embedded stack and on
PostgreSQL + Redis: each event reaches a watcher within 1 s of the worker recording it, progress arrives
within epochs, the stream ends with the job, and many watchers of one job cost the database one poll."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import REDIS_URL
from tests.stack import Stack

pytestmark = pytest.mark.slow
EPOCHS = 12
SPEC = {"dataset": "digits", "architecture": {"type": "mlp", "hidden_sizes": [128, 64]},
        "optimizer": {"type": "adam"}, "training": {"epochs": EPOCHS, "batch_size": 8, "seed": 0}}


@pytest.fixture(scope="module", params=["embedded", pytest.param("postgresql+redis", marks=pytest.mark.realstack)])
def stack(request, tmp_path_factory):
    # One training thread, so that the API keeps a core of this machine's two while a job trains.
    env = {"TRAINSERVE_HOME": str(tmp_path_factory.mktemp("events")), "TRAINSERVE_WORKER_TORCH_THREADS": "1"}
    if request.param != "embedded":
        url = request.getfixturevalue("postgres_url")
        env.update(TRAINSERVE_DATABASE_URL=url, TRAINSERVE_BROKER_URL=REDIS_URL,
                   TRAINSERVE_QUEUE=f"trainserve-events-{uuid.uuid4().hex[:8]}")
    with Stack.start(env) as stack:
        yield stack


def watch(base_url: str, job_id: str, received: list, headers: dict | None = None) -> None:
    """Read the stream to its end, noting when each event arrived."""
    current = {}
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", headers=headers or {}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(":")
                current[field] = value.strip()
            elif not line and "data" in current:
                received.append((time.time(), json.loads(current["data"])))
                current = {}


def polls(stack: Stack) -> float:
    text = stack.http.get("/metrics").raise_for_status().text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "trainserve_event_polls_total")


def test_events_reach_a_watcher_within_a_second_and_the_stream_ends_with_the_job(stack):
    job_id = stack.http.post("/v1/jobs", json=SPEC).raise_for_status().json()["id"]
    received = []
    watch(stack.base_url, job_id, received)  # returns when the server ends the stream
    events = [data for _, data in received]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["status"] for e in events if e["kind"] == "status"] == ["queued", "running", "succeeded"]
    assert [e["epoch"] for e in events if e["kind"] == "epoch"] == list(range(1, EPOCHS + 1))
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress and all(0 < e["step"] <= e["steps"] for e in progress), "progress within epochs"
    late = [(arrived - datetime.fromisoformat(e["time"]).timestamp(), e["kind"]) for arrived, e in received
            if e["seq"] > 1]  # the first was written before the watcher connected
    assert max(seconds for seconds, _ in late) <= 1.0, sorted(late)[-5:]
    assert stack.http.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"


def test_many_watchers_share_one_poll_and_a_reconnect_resumes_without_gaps(stack):
    job_id = stack.http.post("/v1/jobs", json=SPEC).raise_for_status().json()["id"]
    before, started = polls(stack), time.monotonic()
    streams = [[] for _ in range(8)]
    threads = [threading.Thread(target=watch, args=(stack.base_url, job_id, s)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    elapsed, made = time.monotonic() - started, polls(stack) - before
    first = [e for _, e in streams[0]]
    assert first[-1]["status"] == "succeeded"
    assert all([e for _, e in s] == first for s in streams), "every watcher saw the same events"
    # One feed polls every 0.2 s for all eight; eight feeds would poll eight times as often.
    assert made <= elapsed / 0.2 + 5, (made, elapsed)

    # A client that lost its connection after event k reconnects with Last-Event-ID: k and gets the rest.
    k = len(first) // 2
    resumed = []
    watch(stack.base_url, job_id, resumed, {"Last-Event-ID": str(k)})
    assert [e for _, e in resumed] == first[k:]
