"""GET /v1/jobs/{id}/events in process: a finished job's stream replays its events in order and ends;
Last-Event-ID resumes after an event; refusals. The live stream, its latency and many watchers run against
real processes in tests/workers/test_job_events_live.py."""

from __future__ import annotations

import json
import uuid

from tests.helpers import LOGREG_SPEC

EPOCHS = 4


def read_events(client, job_id: str, **headers) -> list[dict]:
    """Every event of the stream until the server ends it, as (id, event, data)."""
    events, current = [], {}
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith(("id:", "event:", "data:")):
                field, _, value = line.partition(":")
                current[field] = value.strip()
            elif not line and "data" in current:
                events.append({"id": int(current["id"]), "event": current["event"], "data": json.loads(current["data"])})
                current = {}
    return events


def finished_job(client, run_job) -> str:
    spec = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": EPOCHS}}
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    run_job(job_id)
    return job_id


def test_a_finished_job_replays_its_events_in_order_and_the_stream_ends(client, run_job):
    job_id = finished_job(client, run_job)
    events = read_events(client, job_id)
    assert [e["id"] for e in events] == list(range(1, len(events) + 1)), "ids count from 1 without gaps"
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    epochs = [e["data"] for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(1, EPOCHS + 1))
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()["items"]
    assert [e["train_loss"] for e in epochs] == [m["train_loss"] for m in metrics]
    final = events[-1]["data"]
    assert final["status"] == "succeeded" and final["model_id"] == client.get(f"/v1/jobs/{job_id}").json()["model"]["id"]
    assert final["result"]["test_accuracy"] > 0.9
    assert all(e["data"]["seq"] == e["id"] and e["data"]["time"] for e in events)


def test_last_event_id_resumes_after_that_event(client, run_job):
    job_id = finished_job(client, run_job)
    everything = read_events(client, job_id)
    resumed = read_events(client, job_id, **{"Last-Event-ID": "3"})
    assert resumed == everything[3:]
    assert read_events(client, job_id, **{"Last-Event-ID": str(everything[-2]["id"])}) == everything[-1:]
    assert read_events(client, job_id, **{"Last-Event-ID": ""}) == everything, "empty: from the first"
    r = client.get(f"/v1/jobs/{job_id}/events", params={"after": 2}, headers={"Accept": "text/event-stream"})
    assert r.status_code == 200 and r.text.count("event: ") == len(everything) - 2


def test_a_cancelled_queued_job_s_stream_ends_with_cancelled(client):
    job_id = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    assert [e["data"]["status"] for e in read_events(client, job_id)] == ["queued", "cancelled"]


def test_refusals(client, run_job):
    missing = client.get(f"/v1/jobs/{uuid.uuid4()}/events")
    assert missing.status_code == 404 and "no job" in missing.json()["error"]["message"]
    job_id = finished_job(client, run_job)
    bad = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["error"]["message"]
    negative = client.get(f"/v1/jobs/{job_id}/events", params={"after": -1})
    assert negative.status_code == 422
