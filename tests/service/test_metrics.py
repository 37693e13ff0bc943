"""/metrics: Prometheus's text format, with route templates (never raw paths) and exact counts."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.main import create_app
from tests.helpers import LOGREG_SPEC, digits_test_split, settings_with


def scrape(client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def api(runtime, migrated):
    with TestClient(create_app(settings_with(runtime, metrics=True), reconcile=False, tune_process=False)) as c:
        yield c


def test_requests_are_counted_by_route_template_and_status(api, trained_classifier):
    pixels = digits_test_split().x[:1, 0].tolist()
    for _ in range(5):
        assert api.post("/predict", json={"instances": pixels, "model": trained_classifier["id"]}).status_code == 200
    missing = uuid.uuid4()
    assert api.get(f"/v1/jobs/{missing}").status_code == 404
    assert api.get("/no/such/path").status_code == 404
    samples = scrape(api)
    assert value(samples, "trainserve_http_requests_total", method="POST", route="/predict", status="200") == 5
    assert value(samples, "trainserve_http_requests_total", method="GET", route="/v1/jobs/{job_id}", status="404") == 1
    assert value(samples, "trainserve_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(samples, "trainserve_http_request_duration_seconds_count", method="POST", route="/predict") == 5
    labels = " ".join(str(k[1]) for k in samples)
    assert str(missing) not in labels and "/no/such/path" not in labels, "no label takes unbounded values"


def test_model_cache_and_batching_are_counted(api, trained_classifier):
    pixels = digits_test_split().x[:1, 0].tolist()
    ask = lambda: api.post("/predict", json={"instances": pixels, "model": trained_classifier["id"]})  # noqa: E731
    ask()  # loads the model into this process's cache, and answers on the way
    before = scrape(api)
    for _ in range(4):
        ask()
    after = scrape(api)
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert value(after, "trainserve_model_loads_total") == 1 and delta("trainserve_model_loads_total") == 0
    assert value(after, "trainserve_artifact_store_seconds_count", backend="file", operation="get") >= 1, \
        "the model was read from the artifact store, and timed"
    assert delta("trainserve_model_cache_lookups_total", result="hit") >= 4
    assert delta("trainserve_predict_batch_requests_sum") == 4, "each warm request went through a batched pass"
    assert value(after, "trainserve_predict_batch_requests_bucket", le="+Inf") == \
        value(after, "trainserve_predict_batch_requests_count")


def test_jobs_by_status_come_from_the_reconciler_s_last_pass(api):
    api.post("/v1/jobs", json=LOGREG_SPEC)
    assert value(scrape(api), "trainserve_jobs", status="queued") == 0, "nothing gauged before a pass"
    api.app.state.reconciler.once()
    queued = api.get("/v1/jobs", params={"status": "queued", "limit": 1}).json()["total"]
    samples = scrape(api)
    assert value(samples, "trainserve_jobs", status="queued") == queued >= 1
    assert ("trainserve_jobs", (("status", "succeeded"),)) in samples


def test_metrics_can_be_turned_off(runtime, migrated):
    with TestClient(create_app(settings_with(runtime, metrics=False), reconcile=False, tune_process=False)) as api:
        r = api.get("/metrics")
        assert r.status_code == 404 and "TRAINSERVE_METRICS" in r.json()["error"]["message"]
