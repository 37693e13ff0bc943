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


def test_an_event_id_must_be_ascii_digits(client, run_job):
    """What the schema says (a run of digits) is what is taken: an id beyond the databases' integer is after
    every event there can be, so a finished job's stream ends at once; anything else is refused."""
    job_id = finished_job(client, run_job)
    for hostile in ("\u00b2", "-1", "1e3", "null", " 7 x"):
        r = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": hostile.encode("latin-1")})
        assert r.status_code == 422 and "Last-Event-ID" in r.json()["error"]["message"], (hostile, r.text)
    for far in ("99999999999999999999999999", str(2**63)):
        assert read_events(client, job_id, **{"Last-Event-ID": far}) == []
    assert client.get(f"/v1/jobs/{job_id}/events", params={"after": 2**63}).status_code == 422


def test_resuming_a_finished_job_at_or_past_its_last_event_ends_at_once(client, run_job):
    job_id = finished_job(client, run_job)
    last = read_events(client, job_id)[-1]["id"]
    assert read_events(client, job_id, **{"Last-Event-ID": str(last)}) == []  # what an EventSource resends
    assert read_events(client, job_id, **{"Last-Event-ID": str(2**63 - 1)}) == []


def test_a_watcher_far_ahead_holds_back_no_other_watcher(runtime, client):
    """Two watchers of one running job share a feed; one resumes after an id from the far future. The other
    still receives every event as it is written, and both streams end with the job."""
    import asyncio

    from sqlalchemy import update

    from service.jobs import events
    from service.platform.events import EventHub
    from service.platform.tables import JobEvent, JobStatus, TrainingJob

    job_id = uuid.UUID(client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"])

    def write(kind: str, **data) -> None:
        with runtime.session() as session:
            session.execute(update(TrainingJob).where(TrainingJob.id == job_id).values(epochs_done=0))
            events.append(session, job_id, kind, **data)

    async def scenario() -> tuple[list, list]:
        hub = EventHub(runtime.session, poll_seconds=0.02)
        ahead, normal = [], []

        async def collect(last: int, into: list) -> None:
            async for event in hub.watch(JobEvent, job_id, last):
                into.append(event[0])

        watchers = [asyncio.create_task(collect(2**63 - 1, ahead)), asyncio.create_task(collect(0, normal))]
        while hub.watchers < 2:
            await asyncio.sleep(0.01)
        for epoch in (1, 2, 3):
            await asyncio.to_thread(write, "epoch", epoch=epoch)
        await asyncio.to_thread(write, "status", status=JobStatus.succeeded.value)
        await asyncio.wait_for(asyncio.gather(*watchers), timeout=10)
        return ahead, normal

    ahead, normal = asyncio.run(scenario())
    assert normal == list(range(1, len(normal) + 1)) and len(normal) == 5, normal  # queued, 3 epochs, the end
    assert ahead == []
