"""What the tests share: the job spec they train, the error shape, the app's settings with changes, the
artifact files on disk, unique names. Test modules import from here, never from each other."""

from __future__ import annotations

import uuid
from pathlib import Path

LOGREG_SPEC = {
    "dataset": "digits",
    "architecture": {"type": "logistic_regression"},
    "optimizer": {"type": "sgd", "momentum": 0.9},
    "training": {"epochs": 15, "batch_size": 64, "learning_rate": 0.05, "seed": 0},
}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(response, status: int, *fragments: str) -> dict:
    """The one error shape, with the status and every fragment of the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    for fragment in fragments:
        assert fragment in body["error"]["message"], body
    return body["error"]


def settings_with(**changes):
    """This test session's settings (its database and artifact folder) with ``changes``, for an app of its own."""
    from service.settings import get_settings

    return get_settings().model_copy(update=changes)


def artifact_files() -> set[Path]:
    """Every dataset file in the test session's artifact folder."""
    from service.settings import get_settings

    root = Path(get_settings().artifacts_url.removeprefix("file://")) / "datasets"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()
