"""Rate limits per API key: 429 with Retry-After once a key has spent its requests; each key its own
budget; a cap on the jobs one key may have queued. In one process here (memory); across two API
processes sharing Redis in tests/workers/test_rate_limits.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.http.ratelimit import Limit, RateLimiter
from service.keys.service import Scope
from service.main import create_app
from tests.helpers import LOGREG_SPEC, REDIS_URL, assert_error, away_from_a_window_edge, settings_with, unique
from tests.service.test_auth import make_key


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def limited(runtime, migrated):
    settings = settings_with(runtime, auth="required", rate_limit_jobs="3/hour", rate_limit_inference="5/hour",
                             max_queued_jobs_per_key=0)
    away_from_a_window_edge()
    with TestClient(create_app(settings, reconcile=False, tune_process=False)) as c:
        yield c


def test_job_submissions_past_the_limit_get_429_with_retry_after(runtime, limited):
    alice, bob = bearer(make_key(runtime, Scope.train, name="alice")), bearer(make_key(runtime, Scope.train, name="bob"))
    assert [limited.post("/v1/jobs", json=LOGREG_SPEC, headers=alice).status_code for _ in range(3)] == [202] * 3
    r = limited.post("/v1/jobs", json=LOGREG_SPEC, headers=alice)
    assert_error(r, 429, "3 jobs requests a hour for this key")
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert limited.post("/v1/jobs", json=LOGREG_SPEC, headers=bob).status_code == 202, "each key its own budget"


def test_inference_past_the_limit_gets_429_on_every_inference_route(runtime, limited):
    key = bearer(make_key(runtime, Scope.predict))
    for _ in range(5):
        assert limited.post("/predict", json={"instances": [[0.0] * 64]}, headers=key).status_code != 429
    assert_error(limited.post("/predict", json={"instances": [[0.0] * 64]}, headers=key), 429, "inference")
    assert limited.post("/forecast", json={}, headers=key).status_code == 429
    r = limited.post("/v2/models/any/infer", json={}, headers=key)
    assert r.status_code == 429 and "rate limit" in r.json()["error"] and r.headers["retry-after"]


def test_a_key_may_have_only_so_many_jobs_queued(runtime, migrated):
    settings = settings_with(runtime, auth="required", max_queued_jobs_per_key=2)
    with TestClient(create_app(settings, reconcile=False, tune_process=False)) as api:
        key = bearer(make_key(runtime, Scope.train))
        ids = [api.post("/v1/jobs", json=LOGREG_SPEC, headers=key).json()["id"] for _ in range(2)]
        assert_error(api.post("/v1/jobs", json=LOGREG_SPEC, headers=key), 429, "2 jobs queued", "cancel some")
        assert api.post(f"/v1/jobs/{ids[0]}/cancel", headers=key).status_code == 202
        assert api.post("/v1/jobs", json=LOGREG_SPEC, headers=key).status_code == 202, "room again"


@pytest.mark.realstack
def test_two_limiters_sharing_redis_admit_the_limit_between_them():
    """Two limiters are two API processes' worth of leases; the count they share lives in Redis."""
    prefix, limit = unique("trainserve-rl"), Limit.parse("7/hour")
    first, second = RateLimiter(REDIS_URL, prefix), RateLimiter(REDIS_URL, prefix)
    away_from_a_window_edge()
    admitted = 0
    for _ in range(6):
        for limiter in (first, second):
            try:
                limiter.hit("inference", "key", limit)
                admitted += 1
            except Exception as exc:
                assert getattr(exc, "status_code", None) == 429
    assert admitted == 7


def test_large_limits_lease_tokens_so_most_requests_skip_the_store():
    calls = []

    class Counting:
        def __init__(self) -> None:
            self.total = 0

        def take(self, key, amount, seconds):
            calls.append(amount)
            self.total += amount
            return self.total

    limiter = RateLimiter("filesystem:///none", "p")
    limiter.store = Counting()
    away_from_a_window_edge()
    for _ in range(1000):
        limiter.hit("inference", "key", Limit.parse("6000/hour"))
    assert len(calls) == 4 and calls[0] == 300, "a lease is a 20th of the limit"


def test_a_rate_that_cannot_be_read_is_refused_with_the_form_to_use():
    with pytest.raises(ValueError, match="e.g. 600/minute"):
        Limit.parse("5 per day")
