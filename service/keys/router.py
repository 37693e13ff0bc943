from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, Field

from service.audit.router import record_request
from service.http.auth import allow
from service.http.errors import errors, parse_id
from service.http.pagination import PageLimit, PageOffset
from service.keys import service
from service.keys.service import KEY_NAME_PATTERN, Scope
from service.platform.db import SessionDep
from service.platform.tables import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[allow(Scope.admin)])
KeyId = Annotated[uuid.UUID, Depends(lambda key_id: parse_id(key_id, "API key"))]


class KeyIn(BaseModel):
    name: str = Field(pattern=KEY_NAME_PATTERN, description="Who uses the key, e.g. web-app or ci: up to 100 letters, "
                                                             "digits, spaces and . _ @ : + -.")
    scopes: list[Scope] = Field(min_length=1, description="predict, train, read and/or admin.")
    expires_at: datetime | None = Field(None, description="When the key stops working (ISO 8601, with a zone); "
                                                          "none: never.")


class KeyOut(BaseModel):
    id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it; the key itself is never shown "
                                    "again.")
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewKey(KeyOut):
    key: str = Field(description="The key. Shown this once: store it now.")


class KeyPage(BaseModel):
    items: list[KeyOut]
    total: int
    limit: int
    offset: int


def _out(row: ApiKey) -> dict:
    return {c: getattr(row, c) for c in KeyOut.model_fields}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=NewKey)
def create_key(body: KeyIn, session: SessionDep, request: Request) -> NewKey:
    """Make a key. The answer holds the key itself, which nothing will show again."""
    row, token = service.create_key(session, body.name, body.scopes, body.expires_at)
    record_request(request, session, "key.create", f"key {row.id}", after={"name": row.name, "scopes": row.scopes,
                                                                            "prefix": row.prefix})
    return NewKey(**_out(row), key=token)


@router.get("", response_model=KeyPage)
def list_keys(session: SessionDep, limit: PageLimit = 50,
              offset: PageOffset = 0) -> KeyPage:
    """Every key, newest first, without the keys themselves."""
    rows, total = service.list_keys(session, limit, offset)
    return KeyPage(items=[KeyOut(**_out(r)) for r in rows], total=total, limit=limit, offset=offset)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(404))
def revoke_key(key_id: KeyId, session: SessionDep, request: Request) -> Response:
    """Revoke a key. Every API process refuses it within TRAINSERVE_AUTH_CACHE_SECONDS (5 s)."""
    row = service.get_key(session, key_id)
    was = row.revoked_at
    service.revoke_key(session, key_id)
    if was is None:
        record_request(request, session, "key.revoke", f"key {row.id}", before={"name": row.name, "revoked": False},
                       after={"name": row.name, "revoked": True})
    session.commit()
    request.app.state.keys.clear()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
