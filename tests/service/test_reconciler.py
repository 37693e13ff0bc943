"""The reconciler: lost messages are sent again, silent workers' jobs are queued again or failed."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest

from service.jobs.lifecycle import JobLost, JobMonitor, claim, finish
from service.jobs.service import jobs_to_resend
from service.platform.tables import JobStatus, TrainingJob, utcnow
from tests.helpers import LOGREG_SPEC

STALE = timedelta(minutes=10)


@pytest.fixture
def beating(runtime):
    """The test's runtime with a heartbeat every 0.05 s."""
    from service.platform.runtime import Runtime

    fast = Runtime(runtime.settings.model_copy(update={"cancel_check_seconds": 0.05}))
    yield fast
    fast.close()


def set_job(runtime, job_id: str, **values) -> None:
    with runtime.session() as session:
        job = session.get(TrainingJob, uuid.UUID(job_id))
        for k, v in values.items():
            setattr(job, k, v)


def get_job(runtime, job_id: str) -> TrainingJob:
    with runtime.session() as session:
        return session.get(TrainingJob, uuid.UUID(job_id))


def resend(runtime, now) -> list[str]:
    with runtime.session() as session:
        return [str(i) for i, _ in jobs_to_resend(session, now, STALE, max_attempts=3)]


def test_queued_job_is_sent_again_only_once_its_message_is_old(runtime, client):
    job = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    assert job not in resend(runtime, utcnow())
    later = utcnow() + STALE + timedelta(seconds=1)
    assert job in resend(runtime, later)
    assert job not in resend(runtime, later), "a job just sent again is not sent again in the next pass"


def test_running_job_whose_worker_went_silent_is_queued_again_and_resumes(runtime, client, run_job):
    job = client.post("/v1/jobs", json={**LOGREG_SPEC, "training": {"epochs": 2}}).json()["id"]
    silent_since = utcnow() - STALE - timedelta(seconds=1)
    set_job(runtime, job, status=JobStatus.running, attempts=1, heartbeat_at=silent_since, enqueued_at=silent_since)
    assert job in resend(runtime, utcnow())
    assert get_job(runtime, job).status == JobStatus.queued
    run_job(job)
    done = get_job(runtime, job)
    assert done.status == JobStatus.succeeded and done.attempts == 2


def test_a_job_that_keeps_losing_its_worker_fails_with_a_reason(runtime, client):
    job = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    set_job(runtime, job, status=JobStatus.running, attempts=3, heartbeat_at=utcnow() - STALE - timedelta(seconds=1))
    assert job not in resend(runtime, utcnow())
    failed = get_job(runtime, job)
    assert failed.status == JobStatus.failed and failed.finished_at is not None
    assert "stopped responding 3 times" in failed.error and "worker logs" in failed.error


def test_a_worker_takes_over_a_running_job_only_when_it_is_silent(runtime, client, run_job):
    job = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    set_job(runtime, job, status=JobStatus.running, attempts=1, heartbeat_at=utcnow())
    run_job(job)  # a duplicate delivery while another worker is alive and training
    assert get_job(runtime, job).attempts == 1 and get_job(runtime, job).status == JobStatus.running


def test_a_worker_that_lost_its_job_to_a_later_delivery_stops_without_writing(runtime, beating, client):
    """Fencing: each delivery owns the job under the attempt number it claimed. Once a later delivery has
    claimed the job, every write of the earlier one (heartbeat, epoch, result) is refused."""
    job_id = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    first = claim(runtime, uuid.UUID(job_id))
    assert first is not None and first.attempts == 1
    set_job(runtime, job_id, heartbeat_at=utcnow() - STALE - timedelta(seconds=1))  # the first worker goes silent
    second = claim(runtime, uuid.UUID(job_id))
    assert second is not None and second.attempts == 2

    first_monitor = JobMonitor(beating, first, threading.Event())
    first_monitor.beat()
    with pytest.raises(JobLost):
        first_monitor()
    finish(runtime, first, JobStatus.failed, error="from the silent worker")
    assert get_job(runtime, job_id).status == JobStatus.running and get_job(runtime, job_id).error is None
    second_monitor = JobMonitor(beating, second, threading.Event())
    second_monitor.beat()
    assert second_monitor() is False


def test_the_heartbeat_goes_on_while_the_training_loop_does_not_ask(runtime, beating, client):
    """The heartbeat runs on its own thread: a worker busy loading data or in one long step is alive."""
    job_id = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    job = claim(runtime, uuid.UUID(job_id))
    set_job(runtime, job_id, heartbeat_at=utcnow() - timedelta(hours=1))
    with JobMonitor(beating, job, threading.Event()) as monitor:
        deadline = time.monotonic() + 5
        while get_job(runtime, job_id).heartbeat_at < utcnow() - timedelta(minutes=1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get_job(runtime, job_id).heartbeat_at > utcnow() - timedelta(minutes=1), "no heartbeat from the thread"
        client.post(f"/v1/jobs/{job_id}/cancel")
        while not monitor() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert monitor() is True, "the cancel was not seen"
    assert not monitor._thread.is_alive()


def test_a_queued_job_is_sent_again_after_a_minute_then_less_and_less_often(runtime, client):
    job = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    with runtime.session() as session:
        t0 = session.get(TrainingJob, uuid.UUID(job)).enqueued_at

    def resent_at(seconds: float) -> bool:
        with runtime.session() as session:
            jobs = jobs_to_resend(session, t0 + timedelta(seconds=seconds), STALE, 3, timedelta(seconds=60))
        return job in [str(i) for i, _ in jobs]

    # Sent at 0; again at 61 (a minute passed), at 123 (it had waited 61), at 247, ... never less often than
    # every 10 minutes.
    assert [s for s in (59, 61, 100, 123, 200, 247, 400, 495) if resent_at(s)] == [61, 123, 247, 495]
    assert resent_at(495 + 600) and not resent_at(495 + 600 + 599)


def test_every_queued_job_is_sent_again_when_the_broker_restarted(runtime, client):
    job = client.post("/v1/jobs", json=LOGREG_SPEC).json()["id"]
    with runtime.session() as session:
        jobs = jobs_to_resend(session, utcnow(), STALE, 3, timedelta(seconds=60), every_queued_job=True)
    assert job in [str(i) for i, _ in jobs]


def test_the_api_answers_503_with_retry_after_while_the_database_is_down(runtime):
    from fastapi.testclient import TestClient

    from service.main import create_app
    from tests.helpers import free_port, settings_with

    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2"
    with TestClient(create_app(settings_with(runtime, database_url=nowhere), reconcile=False,
                               tune_process=False)) as down:
        r = down.get("/v1/jobs")
        assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert "database does not answer" in r.json()["error"]["message"]
        assert down.post("/v1/jobs", json=LOGREG_SPEC).status_code == 503
