"""What datasets and models share: a reference (``id | name | name@<tag>``) and version numbers under a name.

A version is the next number after the newest under that name. Two writers may pick the same number at once;
the unique key on (name, version) refuses the second, which tries again with the number after.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.http.errors import Conflict

T = TypeVar("T")


@dataclass(frozen=True)
class Reference:
    """``id``: the reference is a UUID; otherwise ``name`` and the ``tag`` after '@' ("" when none)."""

    id: uuid.UUID | None
    name: str
    tag: str

    @property
    def version(self) -> int | None:
        return int(self.tag) if self.tag.isdigit() and int(self.tag) <= 2**31 - 1 else None


def parse_reference(text: str) -> Reference:
    try:
        return Reference(uuid.UUID(text), "", "")
    except ValueError:
        name, _, tag = text.partition("@")
        return Reference(None, name, tag)


def next_version(session: Session, table: type, name: str) -> int:
    """The number after the newest version under ``name`` (1 for a new name)."""
    return (session.scalar(select(func.max(table.version)).where(table.name == name)) or 0) + 1


def flush_or_conflict(session: Session, message: str) -> None:
    """Write the session's new rows in a savepoint; a unique key another writer took first is a 409 with
    ``message``, and the session goes on."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(message) from None


def retry_on_conflict(attempt: Callable[[], T], what: str, attempts: int = 5) -> T:
    """Run ``attempt`` (which picks a version and writes it) until no other writer took that version first."""
    for _ in range(attempts):
        try:
            return attempt()
        except IntegrityError:
            continue
    raise Conflict(f"could not give {what} a version number: other writers kept taking it; try again")
