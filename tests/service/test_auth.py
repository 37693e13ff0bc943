"""API keys: every route x {no key, each scope, a revoked key, an expired key} answers as documented;
keys are stored hashed and shown once; a revocation is seen within the cache time; where the API listens
decides whether keys are required."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.keys.service import Scope, create_key, digest, revoke_key
from service.main import create_app
from service.platform.tables import ApiKey, utcnow
from tests.helpers import assert_error, settings_with

PREDICT, TRAIN, READ, ADMIN = "predict", "train", "read", "admin"
OPEN = "open"
# Every operation the API has, with the scopes that let a key in (admin always does). The test fails for a
# route missing here, so a new route cannot ship without a decision.
POLICY: dict[tuple[str, str], set[str]] = {
    ("GET", "/healthz"): {OPEN}, ("GET", "/readyz"): {OPEN}, ("GET", "/readyz/jobs"): {OPEN},
    ("GET", "/v2"): {OPEN}, ("GET", "/v2/health/live"): {OPEN}, ("GET", "/v2/health/ready"): {OPEN},
    ("POST", "/predict"): {PREDICT},
    ("POST", "/forecast"): {PREDICT}, ("POST", "/forecast/anomalies"): {PREDICT},
    ("GET", "/v2/models/{name}"): {PREDICT, READ}, ("GET", "/v2/models/{name}/versions/{version}"): {PREDICT, READ},
    ("GET", "/v2/models/{name}/ready"): {PREDICT, READ},
    ("GET", "/v2/models/{name}/versions/{version}/ready"): {PREDICT, READ},
    ("POST", "/v2/models/{name}/infer"): {PREDICT}, ("POST", "/v2/models/{name}/versions/{version}/infer"): {PREDICT},
    ("GET", "/v1/models"): {PREDICT, READ}, ("GET", "/v1/models/{ref}"): {PREDICT, READ},
    ("GET", "/v1/models/{ref}/download"): {PREDICT, READ},
    ("GET", "/v1/models/{name}/versions/{version}"): {PREDICT, READ},
    ("POST", "/v1/models/{ref}/exports"): {TRAIN},
    ("PUT", "/v1/models/{name}/aliases/{alias}"): {ADMIN}, ("DELETE", "/v1/models/{name}/aliases/{alias}"): {ADMIN},
    ("POST", "/v1/jobs"): {TRAIN}, ("GET", "/v1/jobs"): {TRAIN, READ}, ("GET", "/v1/jobs/{job_id}"): {TRAIN, READ},
    ("GET", "/v1/jobs/{job_id}/metrics"): {TRAIN, READ}, ("POST", "/v1/jobs/{job_id}/cancel"): {TRAIN},
    ("GET", "/v1/jobs/{job_id}/events"): {TRAIN, READ},
    ("POST", "/v1/sweeps"): {TRAIN}, ("GET", "/v1/sweeps"): {TRAIN, READ}, ("GET", "/v1/sweeps/{sweep_id}"): {TRAIN, READ},
    ("POST", "/v1/sweeps/{sweep_id}/cancel"): {TRAIN}, ("GET", "/v1/sweeps/{sweep_id}/events"): {TRAIN, READ},
    ("POST", "/v1/datasets"): {TRAIN}, ("POST", "/v1/datasets/import"): {TRAIN},
    ("GET", "/v1/datasets"): {TRAIN, READ}, ("GET", "/v1/datasets/{ref}"): {TRAIN, READ},
    ("GET", "/v1/datasets/{ref}/preview"): {TRAIN, READ},
    ("DELETE", "/v1/datasets/{ref}"): {ADMIN}, ("POST", "/v1/models/{name}/versions/{version}/promote"): {ADMIN},
    ("POST", "/v1/keys"): {ADMIN}, ("GET", "/v1/keys"): {ADMIN}, ("DELETE", "/v1/keys/{key_id}"): {ADMIN},
    ("GET", "/v1/audit"): {ADMIN}, ("GET", "/metrics"): {READ},
    ("POST", "/v1/models/{name}/rollouts"): {ADMIN}, ("GET", "/v1/models/{name}/rollouts"): {READ},
    ("GET", "/v1/rollouts"): {READ}, ("GET", "/v1/models/{name}/rollouts/{rollout_id}"): {READ},
    ("GET", "/v1/models/{name}/rollouts/{rollout_id}/events"): {READ},
    ("POST", "/v1/models/{name}/rollouts/{rollout_id}/pause"): {ADMIN},
    ("POST", "/v1/models/{name}/rollouts/{rollout_id}/resume"): {ADMIN},
    ("POST", "/v1/models/{name}/rollouts/{rollout_id}/promote"): {ADMIN},
    ("POST", "/v1/models/{name}/rollouts/{rollout_id}/abort"): {ADMIN},
    ("POST", "/v1/feedback"): {PREDICT, TRAIN}, ("GET", "/v1/models/{name}/versions/{version}/monitoring"): {PREDICT, READ},
    ("GET", "/v1/models/{name}/monitoring"): {PREDICT, READ}, ("PUT", "/v1/models/{name}/monitoring"): {ADMIN},
    ("GET", "/v1/models/{name}/versions/{version}/drift"): {PREDICT, READ},
    ("PUT", "/v1/models/{name}/retraining"): {ADMIN}, ("GET", "/v1/models/{name}/retraining"): {READ},
    ("DELETE", "/v1/models/{name}/retraining"): {ADMIN},
}
PLACEHOLDERS = {"name": "no-such-model", "version": "1", "ref": "no-such-thing", "alias": "production",
                "job_id": "00000000-0000-4000-8000-000000000000",
                "sweep_id": "00000000-0000-4000-8000-000000000000", "key_id": "00000000-0000-4000-8000-000000000000",
                "rollout_id": "00000000-0000-4000-8000-000000000000"}


def make_key(runtime, *scopes: Scope, expires_in: timedelta | None = None, revoked: bool = False,
             name: str = "test") -> str:
    with runtime.session() as session:
        row, token = create_key(session, name, list(scopes), utcnow() + expires_in if expires_in else None)
        if revoked:
            revoke_key(session, row.id)
    return token


@pytest.fixture(scope="module")
def secured(runtime, migrated):
    with TestClient(create_app(settings_with(runtime, auth="required"), reconcile=False, tune_process=False)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(runtime, secured) -> dict[str, str | None]:
    expired = make_key(runtime, Scope.admin, expires_in=timedelta(seconds=1), name="expiring")
    tokens = {"no key": None, PREDICT: make_key(runtime, Scope.predict), TRAIN: make_key(runtime, Scope.train),
              READ: make_key(runtime, Scope.read), ADMIN: make_key(runtime, Scope.admin),
              "revoked": make_key(runtime, Scope.admin, revoked=True)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the expiring key passes its expiry
        with runtime.session() as session:
            row = session.scalar(select(ApiKey).where(ApiKey.sha256 == digest(expired)))
            if row.expires_at <= utcnow():
                break
        time.sleep(0.05)
    tokens["expired"] = expired
    return tokens


def test_every_route_has_a_policy(secured):
    operations = {(method.upper(), path) for path, item in secured.get("/openapi.json").json()["paths"].items()
                  for method in item}
    assert operations == set(POLICY), f"decide the scopes of {operations - set(POLICY)}"


@pytest.mark.parametrize(("method", "path"), sorted(POLICY))
def test_auth_matrix(secured, keys, method, path):
    url = re.sub(r"\{(\w+)\}", lambda m: PLACEHOLDERS[m.group(1)], path)
    allowed = POLICY[(method, path)]
    for who, token in keys.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = secured.request(method, url, headers=headers, json={} if method in ("POST", "PUT") else None)
        if OPEN in allowed:
            expected = "in"
        elif who in ("no key", "revoked", "expired"):
            expected = 401
        else:
            expected = "in" if who in allowed or who == ADMIN else 403
        if expected == "in":
            assert r.status_code not in (401, 403), f"{who}: {method} {url} -> {r.status_code} {r.text}"
        else:
            assert r.status_code == expected, f"{who}: {method} {url} -> {r.status_code} {r.text}"
            body = r.json()
            message = body["error"] if path.startswith("/v2") else body["error"]["message"]
            assert {401: "key", 403: "needs"}[expected] in message, message
            if expected == 401:
                assert r.headers["www-authenticate"] == "Bearer"
                if who in ("revoked", "expired"):
                    assert who in message, message


def test_a_new_key_is_shown_once_and_stored_hashed(runtime, secured, keys):
    admin = {"Authorization": f"Bearer {keys[ADMIN]}"}
    r = secured.post("/v1/keys", json={"name": "web-app", "scopes": ["predict"]}, headers=admin)
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["key"].startswith("tsk_") and new["prefix"] == new["key"][:12] and new["scopes"] == ["predict"]
    with runtime.session() as session:
        row = session.get(ApiKey, uuid.UUID(new["id"]))
        assert row.sha256 == digest(new["key"]) and new["key"] not in repr(row.__dict__)
    listed = secured.get("/v1/keys", headers=admin, params={"limit": 200}).json()["items"]
    assert new["id"] in [k["id"] for k in listed] and all("key" not in k for k in listed)
    used = secured.post("/predict", json={"instances": [[0.0] * 64]}, headers={"Authorization": f"Bearer {new['key']}"})
    assert used.status_code != 401
    mine = next(k for k in secured.get("/v1/keys", headers=admin, params={"limit": 200}).json()["items"]
                if k["id"] == new["id"])
    assert mine["last_used_at"] is not None


def test_a_revoked_key_is_refused_within_the_cache_time(runtime, migrated):
    settings = settings_with(runtime, auth="required", auth_cache_seconds=0.5)
    with TestClient(create_app(settings, reconcile=False, tune_process=False)) as api, \
            TestClient(create_app(settings, reconcile=False, tune_process=False)) as other_process:
        admin = {"Authorization": f"Bearer {make_key(runtime, Scope.admin)}"}
        made = api.post("/v1/keys", json={"name": "short-lived", "scopes": ["read"]}, headers=admin).json()
        user = {"Authorization": f"Bearer {made['key']}"}
        assert other_process.get("/v1/jobs", headers=user).status_code == 200  # cached there now
        assert api.delete(f"/v1/keys/{made['id']}", headers=admin).status_code == 204
        assert api.get("/v1/jobs", headers=user).status_code == 401, "the revoking process forgets at once"
        deadline, status = time.monotonic() + 5, 200
        while time.monotonic() < deadline and status == 200:
            status = other_process.get("/v1/jobs", headers=user).status_code
            time.sleep(0.05)
        assert status == 401, "another process refuses it within its cache time"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "", "scopes": ["read"]}, "name"), ({"name": "x", "scopes": []}, "scopes"),
    ({"name": "evil\x00key", "scopes": ["read"]}, "name"), ({"name": "line\nbreak", "scopes": ["read"]}, "name"),
    ({"name": "x", "scopes": ["root"]}, "scopes"), ({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
                                                     "expires_at"),
])
def test_a_key_request_that_cannot_be_made_says_why(secured, keys, body, field):
    r = secured.post("/v1/keys", json=body, headers={"Authorization": f"Bearer {keys[ADMIN]}"})
    error = assert_error(r, 422)
    assert error["details"][0]["field"].startswith(field), error


def test_key_changes_and_alias_moves_are_in_the_audit_log(secured, keys, trained_classifier):
    admin = {"Authorization": f"Bearer {keys[ADMIN]}"}
    made = secured.post("/v1/keys", json={"name": "audited", "scopes": ["train"]}, headers=admin).json()
    secured.delete(f"/v1/keys/{made['id']}", headers=admin)
    name = trained_classifier["name"]
    assert secured.put(f"/v1/models/{name}/aliases/audit-test", json={"version": trained_classifier["version"]},
                       headers=admin).status_code == 200
    assert secured.delete(f"/v1/models/{name}/aliases/audit-test", headers=admin).status_code == 204
    events = secured.get("/v1/audit", headers=admin, params={"limit": 200}).json()["items"]
    mine = [e for e in events if e["target"] in (f"key {made['id']}", f"{name}@audit-test")]
    assert [e["action"] for e in reversed(mine)] == ["key.create", "key.revoke", "alias.set", "alias.delete"]
    for event in mine:
        assert event["key_name"] == "test" and event["key_id"]
    alias_set = next(e for e in mine if e["action"] == "alias.set")
    assert alias_set["before"] == {"version": None} and alias_set["after"] == {"version": trained_classifier["version"]}
    assert secured.get("/v1/audit", headers={"Authorization": f"Bearer {keys[READ]}"}).status_code == 403


def test_keys_are_required_wherever_the_api_listens_beyond_loopback(runtime, migrated):
    for host, auth, required in [("127.0.0.1", "auto", False), ("127.0.0.1", "required", True),
                                 ("0.0.0.0", "auto", True), ("0.0.0.0", "off", True), ("::1", "off", False),
                                 ("10.1.2.3", "auto", True), ("localhost", "auto", False)]:
        assert settings_with(runtime, api_host=host, auth=auth).keys_required is required, (host, auth)


def test_the_schema_offers_the_bearer_scheme(secured):
    schema = secured.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        **schema["components"]["securitySchemes"]["apiKey"], "type": "http", "scheme": "bearer"}
    assert schema["paths"]["/predict"]["post"]["security"] == [{"apiKey": ["predict"]}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_a_server_that_needs_no_key_publishes_a_schema_that_asks_for_none(client):
    """make run's loopback server: a client generator or a fuzzer reading its schema must not send keys or
    expect 401s it will never get."""
    schema = client.get("/openapi.json").json()
    operations = [op for item in schema["paths"].values() for op in item.values()]
    assert operations and not any("security" in op for op in operations)
    assert not any(code in op["responses"] for op in operations for code in ("401", "403"))
    assert "securitySchemes" not in schema.get("components", {})
    assert "requires no API key" in schema["info"]["description"]


def test_the_start_up_log_says_whether_keys_are_required(runtime, migrated, caplog):
    caplog.set_level("INFO", logger="trainserve.api")
    with TestClient(create_app(settings_with(runtime, auth="auto"), reconcile=False, tune_process=False)) as c:
        assert c.get("/v1/jobs").status_code == 200
    assert "API keys are NOT required" in caplog.text and "TRAINSERVE_AUTH=required" in caplog.text
    caplog.clear()
    with TestClient(create_app(settings_with(runtime, auth="required"), reconcile=False, tune_process=False)) as c:
        assert c.get("/v1/jobs").status_code == 401
    assert "API keys required" in caplog.text
