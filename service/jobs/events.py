"""A job's events: written in the transaction of each change, read by ``GET /v1/jobs/{id}/events`` (on the
event streams of service/platform/events.py).

Kinds, each with its ``data``:
- ``status``: ``{"status", "attempt"?, "error"?, "model_id"?, "result"?, "reason"?}`` on every change of
  status: queued, running, succeeded, failed, cancelled, pruned (stopped by its hooks), and queued again.
- ``progress``: ``{"epoch", "step", "steps"}`` within an epoch, at most every
  ``TRAINSERVE_CANCEL_CHECK_SECONDS`` (the worker's heartbeat thread writes it, not the training loop).
- ``epoch``: that epoch's metrics, as ``GET /v1/jobs/{id}/metrics`` lists them.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from service.platform import events
from service.platform.tables import JobEvent, JobStatus


def append(session: Session, job_id: uuid.UUID, kind: str, **data: Any) -> None:
    """Add an event to ``session``'s transaction, which must also update the job's row."""
    events.append(session, JobEvent, job_id, kind, data)


def status(session: Session, job_id: uuid.UUID, status: JobStatus, **data: Any) -> None:
    append(session, job_id, "status", status=status.value, **data)
