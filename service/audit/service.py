"""The audit log's domain half: alias moves, promotions, deletes and key changes, each with who (the key),
when, and what it was before and after. Written in the same transaction as the change it records.

Plain arguments only, so the worker's path for registering a model loads nothing of the HTTP layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from service.platform.tables import AuditEvent

if TYPE_CHECKING:
    from service.http.auth import Principal


def record(session: Session, who: Principal | None, action: str, target: str, before: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None) -> None:
    session.add(AuditEvent(action=action, target=target, key_id=who.key_id if who else None,
                           key_name=who.name if who and who.key_id else None, before=before, after=after))
