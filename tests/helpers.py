"""What the tests share: the job spec they train, the error shape, the app's settings with changes, the
artifact files on disk, unique names. Test modules import from here, never from each other."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

POSTGRES_ADMIN_URL = os.environ.get("TRAINSERVE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TRAINSERVE_TEST_REDIS", "redis://127.0.0.1:6379/0")

def solar_forecaster(name: str, horizon: int) -> dict:
    """A small LSTM on the built-in solar series (solar.current, 8 readings back): trains in seconds."""
    return {"task": "forecast", "dataset": "solar", "name": name,
            "forecast": {"target": "solar.current", "lookback": 8, "horizon": horizon, "gaps": "drop",
                         "calendar": ["time_of_day", "day_of_year"]},
            "architecture": {"type": "lstm", "hidden_size": 16}, "optimizer": {"type": "adam"},
            "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.003}}


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


def settings_with(runtime, **changes):
    """This test session's settings (its database and artifact folder) with ``changes``, for an app of its own."""

    return runtime.settings.model_copy(update=changes)


def artifact_files(runtime) -> set[Path]:
    """Every dataset file in the test session's artifact folder."""

    root = Path(runtime.settings.artifacts_url.removeprefix("file://")) / "datasets"
    return {p for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@contextlib.contextmanager
def new_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"trainserve_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A port that was free a moment ago, for servers that cannot take a socket; prefer `listening_socket`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket() -> socket.socket:
    """A socket bound to a port of its own and listening: handed to a server, no other process can take the
    port between choosing it and serving on it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


@functools.cache
def digits_test_split():
    """The test part of `digits` as the jobs in these tests cut it (validation 0.1, test 0.2, seed 0)."""
    from models.datasets import load_builtin, split_dataset

    return split_dataset(load_builtin("digits"), validation_split=0.1, test_split=0.2, seed=0).test


def away_from_a_window_edge(window: int = 3600, margin: float = 60) -> None:
    """Rate-limit windows are fixed (a second, a minute, an hour): a test that counts requests starts at
    least ``margin`` seconds before the current window ends, waiting for the next window if need be."""
    import time

    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.1)


def wait_until(value, what: str, timeout: float = 120, details=lambda: ""):
    """Poll ``value()`` until it returns something other than None, and return that; ``details()`` is added
    to the error when it never does."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (result := value()) is not None:
            return result
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}\n{details()}")
