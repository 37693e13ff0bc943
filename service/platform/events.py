"""Event streams, one mechanism for every kind of owner (a job, a sweep): events are rows written in the
transaction of the change they describe, numbered from 1 per owner with no gaps; an API process polls the
database once per watched owner for all of its watchers (:class:`EventHub`) and serves them as Server-Sent
Events (:func:`event_stream`), resumable with ``Last-Event-ID``.

A table of events has the columns of ``service.platform.tables.EventColumns`` and names its owner's column
in ``OWNER``; jobs and sweeps each add their own kinds on top (service/jobs/events.py,
service/sweeps/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager as ContextManager
from typing import Annotated, Any

import orjson
from fastapi import Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse, ServerSentEvent

from service.http.errors import InvalidInput
from service.platform.tables import JobStatus, utcnow

POLL_SECONDS = 0.2
# A stream ends after one of these statuses: a job's final ones, which include a sweep's (succeeded, failed,
# cancelled).
TERMINAL = frozenset(s.value for s in JobStatus if s.finished)


def owner_of(table):
    """The column that names an event's owner (``job_id``, ``sweep_id``)."""
    return getattr(table, table.OWNER)


def append(session: Session, table, key: uuid.UUID, kind: str, data: dict[str, Any]) -> None:
    """Add an event to ``session``'s transaction, which must also update (or lock) the owner's row: writers of
    one owner then take turns, and the sequence has no gaps."""
    owner = owner_of(table)
    last = session.scalar(select(func.max(table.seq)).where(owner == key)) or 0
    session.add(table(**{owner.key: key}, seq=last + 1, kind=kind, data=data, created_at=utcnow()))
    session.flush()


def after(session: Session, table, key: uuid.UUID, seq: int) -> list[tuple[int, str, dict, str]]:
    """The owner's events after ``seq``: (seq, kind, data, time in ISO 8601)."""
    rows = session.execute(select(table.seq, table.kind, table.data, table.created_at)
                           .where(owner_of(table) == key, table.seq > seq).order_by(table.seq)).all()
    return [(s, k, d, t.isoformat()) for s, k, d, t in rows]


class _Feed:
    def __init__(self, table) -> None:
        self.table = table
        self.watchers: set[asyncio.Queue] = set()
        self.seen = 0  # the last seq this feed has handed out
        self.task: asyncio.Task | None = None


class EventHub:
    """One per API process: a feed per watched owner, which polls the database for all of its watchers."""

    def __init__(self, sessions: Callable[[], ContextManager[Session]], poll_seconds: float = POLL_SECONDS) -> None:
        self.sessions, self.poll_seconds = sessions, poll_seconds
        self.feeds: dict[uuid.UUID, _Feed] = {}
        self.polls = 0  # database polls made, for /metrics: one per feed per interval, whatever the watchers

    @property
    def watchers(self) -> int:
        return sum(len(feed.watchers) for feed in self.feeds.values())

    async def watch(self, table, key: uuid.UUID, last: int = 0) -> AsyncIterator[tuple[int, str, dict, str]]:
        """The events in ``table`` of owner ``key`` after ``last``, in order, each once; ends after a final
        status."""
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = _Feed(table)
            feed.seen = last
        queue: asyncio.Queue = asyncio.Queue()
        feed.watchers.add(queue)
        if feed.task is None:
            feed.task = asyncio.create_task(self._poll(key, feed))
        try:
            # What the feed handed out before this watcher joined, read once for it; what comes after
            # reaches it through the feed. An event in both is passed on once (seq only grows).
            backlog = await run_in_threadpool(self._after, table, key, last) if last < feed.seen else []
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
                if self.feeds.get(key) is feed:
                    del self.feeds[key]

    def _after(self, table, key: uuid.UUID, seq: int) -> list[tuple[int, str, dict, str]]:
        with self.sessions() as session:
            return after(session, table, key, seq)

    async def _poll(self, key: uuid.UUID, feed: _Feed) -> None:
        while True:
            self.polls += 1
            for event in await run_in_threadpool(self._after, feed.table, key, feed.seen):
                feed.seen = event[0]
                for queue in feed.watchers:
                    queue.put_nowait(event)
            await asyncio.sleep(self.poll_seconds)


LastEventId = Annotated[str | None, Header(
    description="Resume after this event id (an EventSource sends it when it reconnects); empty: from the first.",
    json_schema_extra={"pattern": "^[0-9]*$"})]
After = Annotated[int | None, Query(ge=0, description="Resume after this event id, where the client cannot send "
                                                      "Last-Event-ID.")]


def event_stream(request: Request, table, key: uuid.UUID, last_event_id: str | None,
                 after: int | None) -> EventSourceResponse:
    """An owner's events in ``table`` as Server-Sent Events, from after ``Last-Event-ID`` (or ``after``)."""
    last = after or 0
    if last_event_id is not None and last_event_id.strip():  # empty, as the SSE standard has it: the first
        if not last_event_id.strip().isdigit():
            raise InvalidInput(f"Last-Event-ID {last_event_id!r} is not an event id; send the `id` of the last "
                               "event received (a whole number), or leave it out to start from the first",
                               details=[{"field": "Last-Event-ID", "message": "not a whole number"}])
        last = int(last_event_id)

    async def stream():
        async for seq, kind, data, at in request.app.state.events.watch(table, key, last):
            yield ServerSentEvent(data=orjson.dumps({"seq": seq, "kind": kind, "time": at, **data}).decode(),
                                  event=kind, id=str(seq))

    return EventSourceResponse(stream(), ping=15)
