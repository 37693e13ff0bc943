"""A sweep's events, read by ``GET /v1/sweeps/{id}/events`` on the same streams as a job's
(service/platform/events.py).

Kinds, each with its ``data``:
- ``status``: ``{"status", "best"?, "model_id"?, "promotion"?, "error"?}`` when the sweep starts and ends.
- ``trial``: ``{"number", "job_id", "status", "params", "value"?}`` when a trial is launched and when it ends.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from service.platform import events
from service.platform.tables import SweepEvent


def append(session: Session, sweep_id: uuid.UUID, kind: str, **data: Any) -> None:
    """A sweep's event, in the transaction that holds the sweep's row lock."""
    events.append(session, SweepEvent, sweep_id, kind, data)
