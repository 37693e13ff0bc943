"""Idempotency-Key on POST /v1/jobs and /v1/datasets: a retry gets the first answer and creates nothing."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.keys.service import Scope
from service.main import create_app
from service.platform.tables import IdempotentRequest, utcnow
from tests import datafiles
from tests.helpers import LOGREG_SPEC, assert_error, settings_with
from tests.service.test_auth import make_key


def jobs_total(client, headers=None) -> int:
    return client.get("/v1/jobs", headers=headers or {}).json()["total"]


def test_a_retried_job_submission_gets_the_first_answer_and_no_second_job(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    before = jobs_total(client)
    first = client.post("/v1/jobs", json=LOGREG_SPEC, headers=key)
    assert first.status_code == 202, first.text
    again = client.post("/v1/jobs", json=LOGREG_SPEC, headers=key)
    assert again.status_code == 202 and again.json() == first.json()
    assert again.headers["location"] == first.headers["location"] and again.headers["idempotent-replayed"] == "true"
    assert jobs_total(client) == before + 1
    other = client.post("/v1/jobs", json=LOGREG_SPEC, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert other.json()["id"] != first.json()["id"], "a new key is a new job"


def test_a_key_reused_for_another_request_is_refused(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert client.post("/v1/jobs", json=LOGREG_SPEC, headers=key).status_code == 202
    changed = {**LOGREG_SPEC, "training": {**LOGREG_SPEC["training"], "epochs": 3}}
    error = assert_error(client.post("/v1/jobs", json=changed, headers=key), 422, "different request", "new key")
    assert error["details"][0]["field"] == "Idempotency-Key"


def test_after_24_hours_the_same_key_makes_a_new_job(runtime, client):
    key = str(uuid.uuid4())
    first = client.post("/v1/jobs", json=LOGREG_SPEC, headers={"Idempotency-Key": key}).json()
    with runtime.session() as session:
        session.execute(update(IdempotentRequest).where(IdempotentRequest.key == key)
                        .values(created_at=utcnow() - timedelta(hours=24, seconds=1)))
    later = client.post("/v1/jobs", json=LOGREG_SPEC, headers={"Idempotency-Key": key})
    assert later.status_code == 202 and later.json()["id"] != first["id"]


def test_retries_at_the_same_moment_make_one_job(client):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    before = jobs_total(client)
    answers, start = [], threading.Barrier(4)

    def submit() -> None:
        start.wait()
        answers.append(client.post("/v1/jobs", json=LOGREG_SPEC, headers=key))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert jobs_total(client) == before + 1


def test_each_api_key_has_its_own_idempotency_keys(runtime, migrated):
    with TestClient(create_app(settings_with(runtime, auth="required"), reconcile=False, tune_process=False)) as api:
        alice, bob = ({"Authorization": f"Bearer {make_key(runtime, Scope.train, name=n)}", "Idempotency-Key": "same-key"}
                      for n in ("alice", "bob"))
        a, b = (api.post("/v1/jobs", json=LOGREG_SPEC, headers=h) for h in (alice, bob))
        assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize("value", ["", "x" * 201, "has space"])
def test_an_unusable_idempotency_key_is_refused(client, value):
    r = client.post("/v1/jobs", json=LOGREG_SPEC, headers={"Idempotency-Key": value})
    assert_error(r, 422, "Idempotency-Key")


def test_a_retried_dataset_upload_gets_the_first_answer(client):
    x, y = datafiles.digits(200)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    name = f"idem-{uuid.uuid4().hex[:8]}"
    send = lambda: client.post("/v1/datasets", data={"name": name}, headers=key,  # noqa: E731
                               files=[("file", ("d.npz", datafiles.npz(x, y)))])
    first, again = send(), send()
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    versions = client.get("/v1/datasets", params={"limit": 200}).json()["items"]
    assert [d["version"] for d in versions if d["name"] == name] == [1]
