"""``Idempotency-Key`` on the POSTs that create something (jobs, datasets): a client that retries after a
timeout or a dropped connection gets the first answer again, within 24 hours, and nothing is created
twice. The key is the caller's own (one API key's keys never meet another's); reusing one for a different
request is refused."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import Header
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.http.errors import InvalidInput
from service.platform.tables import IdempotentRequest, utcnow

WINDOW = timedelta(hours=24)
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
    description="Any unique string (a UUID, say): a retry with the same key within 24 hours gets the first "
                "answer, and creates nothing twice.")]


@dataclass(frozen=True)
class Attempt:
    owner: str
    path: str
    key: str
    fingerprint: str


def attempt(owner: str, path: str, key: str | None, *request: Any) -> Attempt | None:
    """This request under its Idempotency-Key (None without one); ``request`` is what makes it this request."""
    if key is None:
        return None
    fingerprint = hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
    return Attempt(owner, path, key, fingerprint)


def earlier_answer(session: Session, attempt: Attempt | None) -> JSONResponse | None:
    """The answer given to the first request with this key, if one was given within 24 hours."""
    if attempt is None:
        return None
    row = session.scalar(select(IdempotentRequest).where(
        IdempotentRequest.owner == attempt.owner, IdempotentRequest.path == attempt.path,
        IdempotentRequest.key == attempt.key, IdempotentRequest.created_at > utcnow() - WINDOW))
    if row is None:
        return None
    if row.fingerprint != attempt.fingerprint:
        raise InvalidInput(f"Idempotency-Key {attempt.key!r} was first sent with a different request; use a new key "
                           "for a new request", details=[{"field": "Idempotency-Key", "message": "reused"}])
    headers = {"Idempotent-Replayed": "true", **({"Location": row.location} if row.location else {})}
    return JSONResponse(row.body, status_code=row.status_code, headers=headers)


def commit_with_answer(session: Session, attempt: Attempt | None, status_code: int, body: dict,
                       location: str | None) -> JSONResponse | None:
    """Commit what the request created together with its answer, kept for a retry. None when committed; the
    earlier answer when the same retry, at the same moment, committed first (then nothing is created twice)."""
    remember(session, attempt, status_code, body, location)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if (earlier := earlier_answer(session, attempt)) is not None:
            return earlier
        raise
    return None


def remember(session: Session, attempt: Attempt | None, status_code: int, body: dict, location: str | None) -> None:
    """Keep the answer, in the transaction that creates what it describes."""
    if attempt is None:
        return
    session.execute(delete(IdempotentRequest).where(  # the same key, first used more than 24 hours ago
        IdempotentRequest.owner == attempt.owner, IdempotentRequest.path == attempt.path,
        IdempotentRequest.key == attempt.key, IdempotentRequest.created_at <= utcnow() - WINDOW))
    session.add(IdempotentRequest(owner=attempt.owner, path=attempt.path, key=attempt.key,
                                  fingerprint=attempt.fingerprint, status_code=status_code, body=body,
                                  location=location))  # written by the caller's commit, which a race can fail
