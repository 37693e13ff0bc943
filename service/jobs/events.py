"""A job's events: written in the transaction of each change, read by ``GET /v1/jobs/{id}/events``.

Kinds, each with its ``data``:
- ``status``: ``{"status", "attempt"?, "error"?, "model_id"?, "result"?, "reason"?}`` on every change of
  status: queued, running, succeeded, failed, cancelled, pruned (a sweep's trial), and queued again.
- ``progress``: ``{"epoch", "step", "steps"}`` within an epoch, at most every
  ``TRAINSERVE_CANCEL_CHECK_SECONDS`` (the worker's heartbeat thread writes it, not the training loop).
- ``epoch``: that epoch's metrics, as ``GET /v1/jobs/{id}/metrics`` lists them.

One API process polls the database once per job for all of its watchers (:class:`EventHub`), every
``POLL_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import session_scope
from service.tables import JobEvent, JobStatus, SweepEvent, utcnow

POLL_SECONDS = 0.2
TERMINAL = frozenset(s.value for s in JobStatus if s.finished)  # a sweep's own end: succeeded, failed, cancelled


def append(session: Session, job_id: uuid.UUID, kind: str, **data: Any) -> None:
    """Add an event to ``session``'s transaction, which must also update the job's row (writers of one job
    then take turns, and the sequence has no gaps)."""
    _append(session, JobEvent, JobEvent.job_id, job_id, kind, data)


def append_sweep(session: Session, sweep_id: uuid.UUID, kind: str, **data: Any) -> None:
    """A sweep's event, in the transaction that holds the sweep's row lock."""
    _append(session, SweepEvent, SweepEvent.sweep_id, sweep_id, kind, data)


def _append(session: Session, table, owner, key: uuid.UUID, kind: str, data: dict) -> None:
    last = session.scalar(select(func.max(table.seq)).where(owner == key)) or 0
    session.add(table(**{owner.key: key}, seq=last + 1, kind=kind, data=data, created_at=utcnow()))
    session.flush()


def status(session: Session, job_id: uuid.UUID, status: JobStatus, **data: Any) -> None:
    append(session, job_id, "status", status=status.value, **data)


def after(job_id: uuid.UUID, seq: int, table=JobEvent) -> list[tuple[int, str, dict, str]]:
    """The job's (or with ``table=SweepEvent``, the sweep's) events after ``seq``: (seq, kind, data, time in
    ISO 8601)."""
    owner = table.job_id if table is JobEvent else table.sweep_id
    with session_scope() as session:
        rows = session.execute(select(table.seq, table.kind, table.data, table.created_at)
                               .where(owner == job_id, table.seq > seq).order_by(table.seq)).all()
    return [(s, k, d, t.isoformat()) for s, k, d, t in rows]


class _Feed:
    def __init__(self, table) -> None:
        self.table = table
        self.watchers: set[asyncio.Queue] = set()
        self.seen = 0  # the last seq this feed has handed out
        self.task: asyncio.Task | None = None


class EventHub:
    """One per API process: a feed per watched job, which polls the database for all of its watchers."""

    def __init__(self, poll_seconds: float = POLL_SECONDS) -> None:
        self.poll_seconds = poll_seconds
        self.feeds: dict[uuid.UUID, _Feed] = {}
        self.polls = 0  # database polls made, for /metrics: one per feed per interval, whatever the watchers

    @property
    def watchers(self) -> int:
        return sum(len(feed.watchers) for feed in self.feeds.values())

    async def watch(self, job_id: uuid.UUID, last: int = 0, table=JobEvent) -> AsyncIterator[tuple[int, str, dict, str]]:
        """The job's (or with ``table=SweepEvent``, the sweep's) events after ``last``, in order, each once;
        ends after a final status."""
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = _Feed(table)
            feed.seen = last
        queue: asyncio.Queue = asyncio.Queue()
        feed.watchers.add(queue)
        if feed.task is None:
            feed.task = asyncio.create_task(self._poll(job_id, feed))
        try:
            # What the feed handed out before this watcher joined, read once for it; what comes after
            # reaches it through the feed. An event in both is passed on once (seq only grows).
            backlog = await run_in_threadpool(after, job_id, last, table) if last < feed.seen else []
            while True:
                event = backlog.pop(0) if backlog else await queue.get()
                if event[0] <= last:
                    continue
                last = event[0]
                yield event
                if event[1] == "status" and event[2].get("status") in TERMINAL:
                    return
        finally:
            feed.watchers.discard(queue)
            if not feed.watchers:
                feed.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
                if self.feeds.get(job_id) is feed:
                    del self.feeds[job_id]

    async def _poll(self, job_id: uuid.UUID, feed: _Feed) -> None:
        while True:
            self.polls += 1
            for event in await run_in_threadpool(after, job_id, feed.seen, feed.table):
                feed.seen = event[0]
                for queue in feed.watchers:
                    queue.put_nowait(event)
            await asyncio.sleep(self.poll_seconds)
