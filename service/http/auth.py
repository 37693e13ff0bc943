"""Who may call what: API keys sent as ``Authorization: Bearer <key>``, each with scopes.

Every route names the scopes that let a key in (``allow(...)`` as a dependency, or ``authorize`` at the
top of a route that takes the raw request); admin lets a key in everywhere. Where keys are not required
(the API on loopback with TRAINSERVE_AUTH=auto or off), every caller may do everything. Each API process
keeps the keys it has looked up for TRAINSERVE_AUTH_CACHE_SECONDS, so a request costs a hash and a dict
look-up, and a revoked key is refused within that time.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from datetime import datetime

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from sqlalchemy.orm import Session

from service.http.errors import Forbidden, Unauthorized
from service.keys.service import Scope, digest, find_key
from service.observability import logs
from service.platform.tables import utcnow

bearer = HTTPBearer(scheme_name="apiKey", bearerFormat="tsk_...", auto_error=False,
                    description="An API key from `trainserve keys create` or `POST /v1/keys`, with the scopes "
                                "the route needs: predict, train, read or admin.")
SECURITY_SCHEME = "apiKey"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: uuid.UUID | None
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, scopes: tuple[str, ...]) -> bool:
        return Scope.admin.value in self.scopes or any(s in self.scopes for s in scopes)

    @property
    def owner(self) -> str:
        """Whose idempotency keys and rate limits these are."""
        return str(self.key_id) if self.key_id else "anonymous"


OPEN = Principal(None, "anyone (API keys are not required)", frozenset(s.value for s in Scope))


class KeyCache:
    """The keys this process has looked up, by hash, for ``ttl`` seconds; unknown hashes too, so that a
    stream of wrong keys costs the database one query per key and period."""

    def __init__(self, sessions: Callable[[], ContextManager[Session]], ttl: float, max_entries: int = 10_000) -> None:
        self.sessions, self.ttl, self.max_entries = sessions, ttl, max_entries
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(sha256)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return False, None
        return True, entry[1]

    def load(self, sha256: str) -> Principal | None:
        with self.sessions() as session:
            row = find_key(session, sha256, utcnow())
            principal = None if row is None else Principal(row.id, row.name, frozenset(row.scopes), row.expires_at,
                                                           row.revoked_at)
        with self._lock:
            self._entries[sha256] = (time.monotonic(), principal)
            self._entries.move_to_end(sha256)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return principal

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


async def authorize(request: Request, *scopes: str) -> Principal:
    """The caller, if one of ``scopes`` (or admin) lets it in; 401 without a usable key, 403 without the scope."""
    principal = await authenticate(request.app.state, request.headers.get("authorization"), scopes,
                                   f"{request.method} {request.url.path}")
    request.state.principal = principal
    if principal is not OPEN:
        logs.key_id.set(principal.owner)  # the key's id, never the key: on this request's log lines
    return principal


async def authenticate(state, header: str | None, scopes: tuple[str, ...], what: str) -> Principal:
    """The caller an ``Authorization`` header (HTTP) or metadata entry (gRPC) names, if one of ``scopes``
    (or admin) lets it do ``what``; Unauthorized or Forbidden otherwise."""
    if not state.settings.keys_required:
        return OPEN
    if not header:
        raise Unauthorized("this API needs a key: send `Authorization: Bearer <key>` (`trainserve keys create` "
                           "makes one)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the key as `Authorization: Bearer <key>`")
    sha256 = digest(token.strip())
    cache: KeyCache = state.keys
    found, principal = cache.get(sha256)
    if not found:
        principal = await run_in_threadpool(cache.load, sha256)
    if principal is None:
        raise Unauthorized("this API key is not known here: check it for typos, or make one with "
                           "`trainserve keys create`")
    if principal.revoked_at is not None:
        raise Unauthorized(f"API key {principal.name!r} was revoked on {principal.revoked_at:%Y-%m-%d %H:%M} UTC; "
                           "ask an admin for a new one")
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise Unauthorized(f"API key {principal.name!r} expired on {principal.expires_at:%Y-%m-%d %H:%M} UTC; "
                           "ask an admin for a new one")
    if not principal.allows(scopes):
        raise Forbidden(f"API key {principal.name!r} has the scopes {', '.join(sorted(principal.scopes))}; "
                        f"{what} needs {' or '.join(scopes)} (or admin)")
    return principal


async def _allowed(security_scopes: SecurityScopes, request: Request,
                   _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    return await authorize(request, *security_scopes.scopes)


def allow(*scopes: Scope):
    """A route dependency: the caller needs one of ``scopes`` (or admin). It also declares them in the
    OpenAPI document, so that /docs offers to authorize."""
    return Security(_allowed, scopes=[s.value for s in scopes])


def openapi_security(*scopes: Scope) -> dict:
    """``openapi_extra`` for a route that calls ``authorize`` itself."""
    return {"security": [{SECURITY_SCHEME: [s.value for s in scopes]}]}


def principal_of(request: Request) -> Principal:
    return getattr(request.state, "principal", OPEN)
