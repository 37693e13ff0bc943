"""Event streams, one mechanism for every kind of owner (a job, a sweep, a rollout): events are rows written in the
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
import logging
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

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
# A stream ends after one of these statuses: a job's final ones, which include a sweep's (succeeded, failed,
# cancelled), and a rollout's (succeeded, rolled_back).
TERMINAL = frozenset(s.value for s in JobStatus if s.finished) | {"rolled_back"}


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
        self.seen = 0  # the last seq this feed has handed out: the newest when it started, then what it polled
        self.started = asyncio.Event()
        self.task: asyncio.Task | None = None


ENDED = (0, "", {}, "")  # put in each watcher's queue when its feed's poll fails: the stream ends, and the
# client's reconnect (with Last-Event-ID) starts a new feed


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
        status, at once when ``last`` is at or past it."""
        final = await run_in_threadpool(self._final, table, key)
        if final is not None and last >= final:
            return
        feed = self.feeds.get(key)
        if feed is None:  # a feed whose poll failed has left self.feeds: it is never shared dead
            feed = self.feeds[key] = _Feed(table)
            feed.task = asyncio.create_task(self._poll(key, feed))
        queue: asyncio.Queue = asyncio.Queue()
        feed.watchers.add(queue)
        try:
            await feed.started.wait()
            # What came before the feed's newest, read once for this watcher; what comes after reaches it
            # through the feed. An event in both is passed on once (seq only grows). A watcher's ``last``
            # never steers the feed, so one that asks for the far future holds back no one else.
            backlog = await run_in_threadpool(self._after, table, key, last) if last < feed.seen else []
            while True:
                event = backlog.pop(0) if backlog else await queue.get()
                if event is ENDED:
                    return
                final = event[1] == "status" and event[2].get("status") in TERMINAL
                if event[0] > last:
                    last = event[0]
                    yield event
                if final:  # the end, even for a watcher that asked to start past it
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

    def _newest(self, table, key: uuid.UUID) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.max(table.seq)).where(owner_of(table) == key)) or 0

    def _final(self, table, key: uuid.UUID) -> int | None:
        """The seq of the owner's final status event, if it has ended."""
        with self.sessions() as session:
            row = session.execute(select(table.seq, table.data).where(owner_of(table) == key, table.kind == "status")
                                  .order_by(table.seq.desc()).limit(1)).first()
        return row[0] if row is not None and row[1].get("status") in TERMINAL else None

    async def _poll(self, key: uuid.UUID, feed: _Feed) -> None:
        try:
            feed.seen = await run_in_threadpool(self._newest, feed.table, key)
            feed.started.set()
            while True:
                self.polls += 1
                for event in await run_in_threadpool(self._after, feed.table, key, feed.seen):
                    feed.seen = event[0]
                    for queue in feed.watchers:
                        queue.put_nowait(event)
                await asyncio.sleep(self.poll_seconds)
        except Exception:
            log.warning("events of %s: the feed's poll failed; its watchers' streams end and reconnect", key,
                        exc_info=True)
            if self.feeds.get(key) is feed:
                del self.feeds[key]
            feed.started.set()
            for queue in feed.watchers:
                queue.put_nowait(ENDED)


MAX_EVENT_ID = 2**63 - 1  # the databases' integer


# A header is a string or absent, never null: typed str (not str | None) so that the schema offers no null
# branch, which a client generator or a fuzzer would send as the text "null". Any run of digits is an id:
# one beyond the databases' integer waits for events after every one there can be.
LastEventId = Annotated[str, Header(
    description="Resume after this event id (an EventSource sends it when it reconnects); empty: from the first.",
    json_schema_extra={"pattern": "^[0-9]*$"})]
After = Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID, description="Resume after this event id, where the "
                                                                      "client cannot send Last-Event-ID.")]


def event_stream(request: Request, table, key: uuid.UUID, last_event_id: str | None,
                 after: int | None) -> EventSourceResponse:
    """An owner's events in ``table`` as Server-Sent Events, from after ``Last-Event-ID`` (or ``after``)."""
    last = after or 0
    if last_event_id is not None and last_event_id.strip():  # empty, as the SSE standard has it: the first
        text = last_event_id.strip()
        if not (text.isascii() and text.isdigit()):
            raise InvalidInput(f"Last-Event-ID {last_event_id!r} is not an event id; send the `id` of the last "
                               "event received (a whole number), or leave it out to start from the first",
                               details=[{"field": "Last-Event-ID", "message": "not an event id"}])
        last = min(int(text), MAX_EVENT_ID)

    async def stream():
        async for seq, kind, data, at in request.app.state.events.watch(table, key, last):
            yield ServerSentEvent(data=orjson.dumps({"seq": seq, "kind": kind, "time": at, **data}).decode(),
                                  event=kind, id=str(seq))

    return EventSourceResponse(stream(), ping=15)
