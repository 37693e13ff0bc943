"""GET /v1/audit, and ``record_request``: a route's change recorded under the key that made it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.service import record
from service.http.auth import allow, principal_of
from service.http.pagination import PageLimit, PageOffset, newest_first
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.platform.tables import AuditEvent


def record_request(request: Request, session: Session, action: str, target: str, before: dict[str, Any] | None = None,
                   after: dict[str, Any] | None = None) -> None:
    record(session, principal_of(request), action, target, before, after)


class AuditEventOut(BaseModel):
    id: uuid.UUID
    created_at: datetime
    action: str
    target: str
    key_id: uuid.UUID | None
    key_name: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    total: int
    limit: int
    offset: int


router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditPage, dependencies=[allow(Scope.admin)])
def list_events(session: SessionDep, action: Annotated[str | None, Query(max_length=50)] = None,
                limit: PageLimit = 50,
                offset: PageOffset = 0) -> AuditPage:
    """Alias moves, promotions, deletes and key changes, newest first; `action` filters (e.g. `alias.set`)."""
    query = select(AuditEvent)
    if action:
        query = query.where(AuditEvent.action == action)
    rows, total = newest_first(session, query, AuditEvent, limit, offset)
    return AuditPage(items=[AuditEventOut.model_validate(r, from_attributes=True) for r in rows], total=total,
                     limit=limit, offset=offset)
